#include "metasp/gradient.hpp"

#include "metasp/parallel.hpp"

#include <stdexcept>

namespace metasp {
namespace {

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

// ||X_t direction||^2 / m_t.
template <class Direction>
double curvature_row(const TasksView& tasks, Index t, const Direction& direction) {
    double sum = 0;
    const Index begin = tasks.begin(t), end = begin + tasks.size(t);
    for (Index i = begin; i < end; ++i) {
        const double value = tasks.X.row(i).dot(direction);
        sum += value * value;
    }
    return sum / double(tasks.size(t));
}

// Writes X_t^T r_t / m_t into g and returns ||r_t||^2 / m_t, for r_t = y_t - X_t theta.
// Row by row, so each row is read from memory once for both its residual and its gradient
// term; explicit dot and axpy loops beat small matrix-vector products, whose per-call
// overhead dominates on tasks of a few rows.
template <class Theta, class Gradient>
double gradient_row(const TasksView& tasks, Index t, const Theta& theta, Gradient&& g) {
    g.setZero();
    double loss = 0;
    const Index begin = tasks.begin(t), end = begin + tasks.size(t);
    for (Index i = begin; i < end; ++i) {
        const auto x = tasks.X.row(i);
        const double r = tasks.y[i] - x.dot(theta);
        g += r * x;
        loss += r * r;
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
        task_loss[t] = gradient_row(tasks, t, Theta.row(t), G.row(t));
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
        task_loss[t] = gradient_row(tasks, t, Theta.row(t), G.row(t));
        // p_t = V (V^T g_t), as dots and axpys: small matrix-vector calls cost more here.
        thread_local Vector direction;
        direction.setZero(V.rows());
        double norm = 0;
        for (Index j = 0; j < V.cols(); ++j) {
            const double coordinate = V.col(j).dot(G.row(t).transpose());
            direction += coordinate * V.col(j);
            norm += coordinate * coordinate;
        }
        projected[t] = norm;
        curvature[t] = curvature_row(tasks, t, direction);  // X_t is still in cache
    });
}

void task_loss(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
               Eigen::Ref<Vector> task_loss, int n_threads) {
    check_tasks(tasks);
    check_shape(tasks, Theta.rows(), Theta.cols(), tasks.n_features(), "Theta");
    if (task_loss.size() != tasks.n_tasks()) throw std::invalid_argument("task_loss has the wrong size");
    for_each_task(tasks, n_threads, double(tasks.n_features()), [&](Index t) {
        const auto theta = Theta.row(t);
        double loss = 0;
        for (Index i = tasks.begin(t), end = i + tasks.size(t); i < end; ++i) {
            const double r = tasks.y[i] - tasks.X.row(i).dot(theta);
            loss += r * r;
        }
        task_loss[t] = loss / double(tasks.size(t));
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
        task_curvature[t] = curvature_row(tasks, t, D.row(t));
    });
}

}  // namespace metasp
