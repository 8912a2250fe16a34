#include "metasp/conjugate.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"

#include <stdexcept>

namespace metasp {
namespace {

struct CurvaturePair {
    double aa = 0, ad = 0, dd = 0;
};

// Sums of u_i^2, u_i v_i and v_i^2 with u_i = x_i . a and v_i = x_i . b over the `rows` rows
// starting at X (row pitch `pitch`), in blocks of up to 4 rows: 4 rows x 2 vectors are 8
// independent multiply-add chains (row_kernels.hpp); float X is converted to double on load.
template <class Scalar>
struct PairRows {
    const Scalar* X;
    Index pitch, d;
    const double* ab[2];
    CurvaturePair sums;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        double dot[R][2];
        rows::dots<R, 2, 4 / R>(X + i * pitch, pitch, d, ab, dot);
        for (int k = 0; k < R; ++k) {
            sums.aa += dot[k][0] * dot[k][0];
            sums.ad += dot[k][0] * dot[k][1];
            sums.dd += dot[k][1] * dot[k][1];
        }
    }
};

template <class Scalar>
METASP_CPU_DISPATCH CurvaturePair curvature_pair_rows(const Scalar* X, Index pitch, Index rows,
                                                      Index d, const double* a, const double* b) {
    PairRows<Scalar> block{X, pitch, d, {a, b}, {}};
    rows::for_row_blocks<4>(rows, block);
    return block.sums;
}

}  // namespace

void task_curvature_pair(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& A,
                         const Eigen::Ref<const RowMatrix>& D, Eigen::Ref<Vector> aa,
                         Eigen::Ref<Vector> ad, Eigen::Ref<Vector> dd, int n_threads) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks(), d = tasks.n_features(), pitch = tasks.X.pitch();
    if (A.rows() != T || A.cols() != d || D.rows() != T || D.cols() != d)
        throw std::invalid_argument("the directions must have shape (T, d)");
    if (aa.size() != T || ad.size() != T || dd.size() != T)
        throw std::invalid_argument("the curvatures need one entry per task");
    const bool parallel = run_parallel(n_threads, 2.0 * double(tasks.n_samples()) * d);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) {
        const CurvaturePair sums = tasks.X.visit([&](const auto* X) {
            return curvature_pair_rows(X + tasks.begin(t) * pitch, pitch, tasks.size(t), d,
                                       A.row(t).data(), D.row(t).data());
        });
        const double m = double(tasks.size(t));
        aa[t] = sums.aa / m;
        ad[t] = sums.ad / m;
        dd[t] = sums.dd / m;
    }
}

}  // namespace metasp
