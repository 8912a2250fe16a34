#include "metasp/conjugate.hpp"

#include "metasp/parallel.hpp"

#include <stdexcept>

namespace metasp {

void task_curvature_pair(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& A,
                         const Eigen::Ref<const RowMatrix>& D, Eigen::Ref<Vector> aa,
                         Eigen::Ref<Vector> ad, Eigen::Ref<Vector> dd, int n_threads) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks(), d = tasks.n_features();
    if (A.rows() != T || A.cols() != d || D.rows() != T || D.cols() != d)
        throw std::invalid_argument("the directions must have shape (T, d)");
    if (aa.size() != T || ad.size() != T || dd.size() != T)
        throw std::invalid_argument("the curvatures need one entry per task");
    const bool parallel = run_parallel(n_threads, 2.0 * double(tasks.n_samples()) * d);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) {
        const auto a = A.row(t), b = D.row(t);
        double sum_aa = 0, sum_ad = 0, sum_dd = 0;
        const Index begin = tasks.begin(t), end = begin + tasks.size(t);
        for (Index i = begin; i < end; ++i) {
            const auto x = tasks.X.row(i);
            const double u = x.dot(a), v = x.dot(b);
            sum_aa += u * u;
            sum_ad += u * v;
            sum_dd += v * v;
        }
        const double m = double(tasks.size(t));
        aa[t] = sum_aa / m;
        ad[t] = sum_ad / m;
        dd[t] = sum_dd / m;
    }
}

}  // namespace metasp
