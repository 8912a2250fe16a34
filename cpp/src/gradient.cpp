#include "metasp/gradient.hpp"

#include "metasp/parallel.hpp"

#include <stdexcept>

namespace metasp {
namespace {

// Rows per block inside one task: a block of X stays in cache between the two products, so X is
// read from memory once even for long tasks.
constexpr Index kRowBlock = 256;
using BlockVector = Eigen::Matrix<double, Eigen::Dynamic, 1, 0, kRowBlock, 1>;

void check_shape(const TasksView& tasks, Index rows, Index cols, Index expected_cols,
                 const char* name) {
    if (rows != tasks.n_tasks() || cols != expected_cols)
        throw std::invalid_argument(std::string(name) + " has the wrong shape");
}

template <class Body>
void for_each_task(const TasksView& tasks, int n_threads, double work_per_sample, Body body) {
    check_threads(n_threads);
    const Index T = tasks.n_tasks();
    const bool parallel = run_parallel(n_threads, double(tasks.n_samples()) * work_per_sample);
#pragma omp parallel for num_threads(n_threads) if (parallel) schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) body(t);
}

// ||r_t||^2 / m_t where fill(i, n, r) writes rows i .. i+n-1 of r_t into r.
template <class Fill>
double blocked_squared_norm(const TasksView& tasks, Index t, Fill fill) {
    BlockVector r;
    double sum = 0;
    const Index begin = tasks.begin(t), end = begin + tasks.size(t);
    for (Index i = begin; i < end; i += kRowBlock) {
        const Index n = std::min(kRowBlock, end - i);
        fill(i, n, r);
        sum += r.squaredNorm();
    }
    return sum / double(tasks.size(t));
}

double curvature_row(const TasksView& tasks, Index t, const Vector& direction) {
    return blocked_squared_norm(tasks, t, [&](Index i, Index n, BlockVector& r) {
        r.noalias() = tasks.X.middleRows(i, n) * direction;
    });
}

// Writes X_t^T r_t / m_t into g and returns ||r_t||^2 / m_t, for r_t = y_t - X_t theta.
template <class Theta, class Gradient>
double gradient_row(const TasksView& tasks, Index t, const Theta& theta, Gradient&& g) {
    g.setZero();
    double loss = 0;
    BlockVector r;
    const Index begin = tasks.begin(t), end = begin + tasks.size(t);
    for (Index i = begin; i < end; i += kRowBlock) {
        const Index n = std::min(kRowBlock, end - i);
        const auto X_block = tasks.X.middleRows(i, n);
        r.noalias() = tasks.y.segment(i, n) - X_block * theta;
        g.noalias() += (X_block.transpose() * r).transpose();
        loss += r.squaredNorm();
    }
    const double m = double(tasks.size(t));
    g /= m;
    return loss / m;
}

void check_gradient_arguments(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                              const Eigen::Ref<RowMatrix>& G, const Eigen::Ref<Vector>& task_loss) {
    check_tasks(tasks);
    check_shape(tasks, Theta.rows(), Theta.cols(), tasks.n_features(), "Theta");
    check_shape(tasks, G.rows(), G.cols(), tasks.n_features(), "G");
    if (task_loss.size() != tasks.n_tasks()) throw std::invalid_argument("task_loss has the wrong size");
}

}  // namespace

void task_gradient(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                   Eigen::Ref<RowMatrix> G, Eigen::Ref<Vector> task_loss, int n_threads) {
    check_gradient_arguments(tasks, Theta, G, task_loss);
    for_each_task(tasks, n_threads, 2.0 * tasks.n_features(), [&](Index t) {
        task_loss[t] = gradient_row(tasks, t, Theta.row(t).transpose(), G.row(t));
    });
}

void task_gradient(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                   Eigen::Ref<RowMatrix> G, Eigen::Ref<Vector> task_loss, int n_threads,
                   const Eigen::Ref<const Matrix>& V, Eigen::Ref<Vector> projected,
                   Eigen::Ref<Vector> curvature) {
    check_gradient_arguments(tasks, Theta, G, task_loss);
    if (V.rows() != tasks.n_features()) throw std::invalid_argument("V must have d rows");
    if (projected.size() != tasks.n_tasks() || curvature.size() != tasks.n_tasks())
        throw std::invalid_argument("projected and curvature need one entry per task");
    for_each_task(tasks, n_threads, 3.0 * tasks.n_features(), [&](Index t) {
        task_loss[t] = gradient_row(tasks, t, Theta.row(t).transpose(), G.row(t));
        thread_local Vector coordinates, direction;
        coordinates.noalias() = V.transpose() * G.row(t).transpose();
        direction.noalias() = V * coordinates;
        projected[t] = coordinates.squaredNorm();
        curvature[t] = curvature_row(tasks, t, direction);  // X_t is still in cache
    });
}

void task_loss(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
               Eigen::Ref<Vector> task_loss, int n_threads) {
    check_tasks(tasks);
    check_shape(tasks, Theta.rows(), Theta.cols(), tasks.n_features(), "Theta");
    if (task_loss.size() != tasks.n_tasks()) throw std::invalid_argument("task_loss has the wrong size");
    for_each_task(tasks, n_threads, double(tasks.n_features()), [&](Index t) {
        const auto theta = Theta.row(t).transpose();
        task_loss[t] = blocked_squared_norm(tasks, t, [&](Index i, Index n, BlockVector& r) {
            r.noalias() = tasks.y.segment(i, n) - tasks.X.middleRows(i, n) * theta;
        });
    });
}

void task_curvature(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& C,
                    const Eigen::Ref<const Matrix>& B, Eigen::Ref<Vector> task_curvature,
                    int n_threads) {
    const Index d = tasks.n_features();
    check_tasks(tasks);
    check_shape(tasks, C.rows(), C.cols(), B.cols(), "C");
    if (B.rows() != d) throw std::invalid_argument("B must have one row per feature");
    if (task_curvature.size() != tasks.n_tasks())
        throw std::invalid_argument("task_curvature has the wrong size");
    for_each_task(tasks, n_threads, double(d), [&](Index t) {
        thread_local Vector direction;
        direction.noalias() = B * C.row(t).transpose();
        task_curvature[t] = curvature_row(tasks, t, direction);
    });
}

void task_curvature(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& D,
                    Eigen::Ref<Vector> task_curvature, int n_threads) {
    check_tasks(tasks);
    check_shape(tasks, D.rows(), D.cols(), tasks.n_features(), "D");
    if (task_curvature.size() != tasks.n_tasks())
        throw std::invalid_argument("task_curvature has the wrong size");
    for_each_task(tasks, n_threads, double(tasks.n_features()), [&](Index t) {
        thread_local Vector direction;
        direction = D.row(t).transpose();
        task_curvature[t] = curvature_row(tasks, t, direction);
    });
}

}  // namespace metasp
