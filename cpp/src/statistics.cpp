#include "metasp/statistics.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace metasp {
namespace {

// Accumulates one task's statistics over its rows, in blocks of up to 4 rows; with Gradient,
// also g += r_k x_k for r_k = y_k - z_k . w while the block is in cache.
template <bool Gradient, class Scalar>
struct StatisticsRows {
    const Scalar* X;
    Index pitch, d, s;
    const double* V;  // (d, s), column pitch ldv
    Index ldv;
    const double* y;
    const double* w;  // (s,) heads, with Gradient
    double* g;        // (d,) gradient sum, with Gradient
    double* z;        // (4 s,) scratch
    double* gram;     // (s, s): the lower triangle is accumulated
    double* cross;    // (s,)
    double squares = 0;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        const Scalar* x0 = X + i * pitch;
        prefetch_rows(x0 + rows::kPrefetchRows * pitch, R * pitch);
        rows::project<R>(x0, pitch, d, V, ldv, s, z);
        [[maybe_unused]] double r[R];
        for (int k = 0; k < R; ++k) {
            const double* zk = z + k * s;
            const double yk = y[i + k];
            squares += yk * yk;
            [[maybe_unused]] double fitted = 0;
            for (Index a = 0; a < s; ++a) {
                cross[a] += zk[a] * yk;
                for (Index b = 0; b <= a; ++b) gram[a * s + b] += zk[a] * zk[b];
                if constexpr (Gradient) fitted += zk[a] * w[a];
            }
            if constexpr (Gradient) r[k] = yk - fitted;
        }
        if constexpr (Gradient) rows::add_rows<R>(x0, pitch, d, r, g);
    }
};

// One task (rows X .. X + (rows - 1) pitch): fills gram (s x s), cross (s,) and, with
// Gradient, g = X_t^T r_t / rows (d,); returns y_t^T y_t.
template <bool Gradient, class Scalar>
METASP_CPU_DISPATCH double statistics_rows(const Scalar* X, Index pitch, const double* y,
                                           Index rows, Index d, const double* V, Index ldv, Index s,
                                           double* z, double* gram, double* cross, const double* w,
                                           double* g) {
    for (Index a = 0; a < s * s; ++a) gram[a] = 0;
    for (Index a = 0; a < s; ++a) cross[a] = 0;
    if (Gradient)
        for (Index j = 0; j < d; ++j) g[j] = 0;
    StatisticsRows<Gradient, Scalar> block{X, pitch, d, s, V, ldv, y, w, g, z, gram, cross};
    rows::for_row_blocks<4>(rows, block);
    for (Index a = 0; a < s; ++a)
        for (Index b = a + 1; b < s; ++b) gram[a * s + b] = gram[b * s + a];
    if (Gradient) {
        const double inverse = 1.0 / double(rows);
        for (Index j = 0; j < d; ++j) g[j] *= inverse;
    }
    return block.squares;
}

template <bool Gradient>
void statistics_pass(const TasksView& tasks, const Eigen::Ref<const Matrix>& V,
                     Eigen::Ref<RowMatrix> gram, Eigen::Ref<RowMatrix> cross,
                     Eigen::Ref<Vector> squares, int n_threads, const double* W, Index ldw,
                     double* G, Index ldg) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V.cols();
    check_subspace_shape(tasks, V.rows(), s);
    if (gram.rows() != T || gram.cols() != s * s || cross.rows() != T || cross.cols() != s ||
        squares.size() != T)
        throw std::invalid_argument("the statistics need shapes (T, s*s), (T, s) and (T,)");
    const Index pitch = tasks.X.pitch();
    const double work = double(tasks.n_samples()) * double(d) * double(s + (Gradient ? 1 : 0));
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (run_parallel(n_threads, work)) \
    schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) {
        thread_local std::vector<double> z;
        z.resize(static_cast<size_t>(4 * s));
        const Index begin = tasks.begin(t);
        squares[t] = tasks.X.visit([&](const auto* X) {
            return statistics_rows<Gradient>(
                X + begin * pitch, pitch, tasks.y.data() + begin, tasks.size(t), d, V.data(),
                V.outerStride(), s, z.data(), gram.row(t).data(), cross.row(t).data(),
                Gradient ? W + t * ldw : nullptr, Gradient ? G + t * ldg : nullptr);
        });
    }
}

}  // namespace

void check_subspace_shape(const TasksView& tasks, Index rows, Index s) {
    const Index d = tasks.n_features();
    if (rows != d || s < 1 || s > d)
        throw std::invalid_argument("V must have shape (d, s) with d = " + std::to_string(d) +
                                    " and s >= 1 (at most d); got (" + std::to_string(rows) + ", " +
                                    std::to_string(s) + ")");
}

void task_statistics(const TasksView& tasks, const Eigen::Ref<const Matrix>& V,
                     Eigen::Ref<RowMatrix> gram, Eigen::Ref<RowMatrix> cross,
                     Eigen::Ref<Vector> squares, int n_threads) {
    check_tasks(tasks);
    check_threads(n_threads);
    statistics_pass<false>(tasks, V, gram, cross, squares, n_threads, nullptr, 0, nullptr, 0);
}

void task_statistics(const TasksView& tasks, const Eigen::Ref<const Matrix>& V,
                     Eigen::Ref<RowMatrix> gram, Eigen::Ref<RowMatrix> cross,
                     Eigen::Ref<Vector> squares, int n_threads,
                     const Eigen::Ref<const RowMatrix>& W, Eigen::Ref<RowMatrix> G) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks();
    if (W.rows() != T || W.cols() != V.cols())
        throw std::invalid_argument("W must have shape (T, s) = (" + std::to_string(T) + ", " +
                                    std::to_string(V.cols()) + ")");
    if (G.rows() != T || G.cols() != tasks.n_features())
        throw std::invalid_argument("G must have shape (T, d)");
    statistics_pass<true>(tasks, V, gram, cross, squares, n_threads, W.data(), W.outerStride(),
                          G.data(), G.outerStride());
}

}  // namespace metasp
