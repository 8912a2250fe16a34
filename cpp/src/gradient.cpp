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

// The row loops below are plain loops over raw rows, vectorised through OpenMP's simd
// reductions and compiled twice (see METASP_CPU_DISPATCH), each for float and double rows.

// Four rows at a time: four independent dot products hide the latency of each one's
// reduction, and each load of the shared vector (and of g below) serves four rows.
constexpr Index kRowBlock = 4;

// sum_i (x_i . p)^2 over the `rows` rows starting at X (row pitch `pitch`). Scalar is float
// or double (DesignMatrix::visit); each element is converted to double as it is loaded.
template <class Scalar>
METASP_CPU_DISPATCH double sum_squared_dots(const Scalar* X, Index pitch, Index rows, Index d,
                                            const double* p) {
    double sum = 0;
    Index i = 0;
    for (; i + kRowBlock <= rows; i += kRowBlock) {
        const Scalar *x0 = X + i * pitch, *x1 = x0 + pitch, *x2 = x1 + pitch, *x3 = x2 + pitch;
        double dot0 = 0, dot1 = 0, dot2 = 0, dot3 = 0;
#pragma omp simd reduction(+ : dot0, dot1, dot2, dot3)
        for (Index j = 0; j < d; ++j) {
            dot0 += x0[j] * p[j];
            dot1 += x1[j] * p[j];
            dot2 += x2[j] * p[j];
            dot3 += x3[j] * p[j];
        }
        sum += (dot0 * dot0 + dot1 * dot1) + (dot2 * dot2 + dot3 * dot3);
    }
    for (; i < rows; ++i) {
        const Scalar* x0 = X + i * pitch;
        double dot0 = 0;
#pragma omp simd reduction(+ : dot0)
        for (Index j = 0; j < d; ++j) dot0 += x0[j] * p[j];
        sum += dot0 * dot0;
    }
    return sum;
}

// g = sum_i r_i x_i and returns sum_i r_i^2, for r_i = y_i - x_i . theta: each row is read
// from memory once for both its residual and its gradient term.
template <class Scalar>
METASP_CPU_DISPATCH double residual_rows(const Scalar* X, Index pitch, const double* y,
                                         Index rows, Index d, const double* theta, double* g) {
    for (Index j = 0; j < d; ++j) g[j] = 0;
    // Short tasks end before the in-loop prefetch gets ahead: fetch the rows that follow this
    // task (the next task's, usually) now.
    if (rows < 4 * kRowBlock) prefetch_rows(X + rows * pitch, rows * pitch);
    double loss = 0;
    Index i = 0;
    for (; i + kRowBlock <= rows; i += kRowBlock) {
        const Scalar *x0 = X + i * pitch, *x1 = x0 + pitch, *x2 = x1 + pitch, *x3 = x2 + pitch;
        prefetch_rows(X + (i + 2 * kRowBlock) * pitch, kRowBlock * pitch);
        double dot0 = 0, dot1 = 0, dot2 = 0, dot3 = 0;
#pragma omp simd reduction(+ : dot0, dot1, dot2, dot3)
        for (Index j = 0; j < d; ++j) {
            dot0 += x0[j] * theta[j];
            dot1 += x1[j] * theta[j];
            dot2 += x2[j] * theta[j];
            dot3 += x3[j] * theta[j];
        }
        const double r0 = y[i] - dot0, r1 = y[i + 1] - dot1, r2 = y[i + 2] - dot2,
                     r3 = y[i + 3] - dot3;
#pragma omp simd
        for (Index j = 0; j < d; ++j) g[j] += (r0 * x0[j] + r1 * x1[j]) + (r2 * x2[j] + r3 * x3[j]);
        loss += (r0 * r0 + r1 * r1) + (r2 * r2 + r3 * r3);
    }
    for (; i < rows; ++i) {
        const Scalar* x0 = X + i * pitch;
        double dot0 = 0;
#pragma omp simd reduction(+ : dot0)
        for (Index j = 0; j < d; ++j) dot0 += x0[j] * theta[j];
        const double r0 = y[i] - dot0;
#pragma omp simd
        for (Index j = 0; j < d; ++j) g[j] += r0 * x0[j];
        loss += r0 * r0;
    }
    return loss;
}

// p = V (V^T g) for V (d x s, column pitch ldv) with orthonormal columns; returns ||V^T g||^2
// = ||p||^2. On tasks of a few rows this costs as much as the pass over X_t itself.
METASP_CPU_DISPATCH
double project(const double* V, Index ldv, Index d, Index s, const double* g, double* p) {
    for (Index i = 0; i < d; ++i) p[i] = 0;
    double norm = 0;
    for (Index j = 0; j < s; ++j) {
        const double* v = V + j * ldv;
        double c = 0;
#pragma omp simd reduction(+ : c)
        for (Index i = 0; i < d; ++i) c += v[i] * g[i];
#pragma omp simd
        for (Index i = 0; i < d; ++i) p[i] += c * v[i];
        norm += c * c;
    }
    return norm;
}

// ||X_t direction||^2 / m_t; `direction` is contiguous.
double curvature_row(const TasksView& tasks, Index t, const double* direction) {
    const Index m = tasks.size(t), pitch = tasks.X.pitch();
    return tasks.X.visit([&](const auto* X) {
        return sum_squared_dots(X + tasks.begin(t) * pitch, pitch, m, tasks.n_features(),
                                direction);
    }) / double(m);
}

// Writes X_t^T r_t / m_t into g and returns ||r_t||^2 / m_t, for r_t = y_t - X_t theta.
// theta and g are contiguous rows.
double gradient_row(const TasksView& tasks, Index t, const double* theta, double* g) {
    const Index begin = tasks.begin(t), m = tasks.size(t), d = tasks.n_features();
    const Index pitch = tasks.X.pitch();
    const double loss = tasks.X.visit([&](const auto* X) {
        return residual_rows(X + begin * pitch, pitch, tasks.y.data() + begin, m, d, theta, g);
    });
    const double inverse = 1.0 / double(m);
    for (Index j = 0; j < d; ++j) g[j] *= inverse;
    return loss * inverse;
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
        task_loss[t] = gradient_row(tasks, t, Theta.row(t).data(), G.row(t).data());
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
        task_loss[t] = gradient_row(tasks, t, Theta.row(t).data(), G.row(t).data());
        thread_local Vector direction;
        direction.resize(V.rows());
        projected[t] = project(V.data(), V.outerStride(), V.rows(), V.cols(), G.row(t).data(),
                               direction.data());
        curvature[t] = curvature_row(tasks, t, direction.data());  // X_t is still in cache
    });
}

void task_loss(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
               Eigen::Ref<Vector> task_loss, int n_threads) {
    check_tasks(tasks);
    check_shape(tasks, Theta.rows(), Theta.cols(), tasks.n_features(), "Theta");
    if (task_loss.size() != tasks.n_tasks()) throw std::invalid_argument("task_loss has the wrong size");
    for_each_task(tasks, n_threads, double(tasks.n_features()), [&](Index t) {
        thread_local Vector gradient;  // computed and discarded: one kernel for both passes
        gradient.resize(tasks.n_features());
        task_loss[t] = gradient_row(tasks, t, Theta.row(t).data(), gradient.data());
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
        task_curvature[t] = curvature_row(tasks, t, direction.data());
    });
}

void task_curvature(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& D,
                    Eigen::Ref<Vector> task_curvature, int n_threads) {
    check_tasks(tasks);
    check_shape(tasks, D.rows(), D.cols(), tasks.n_features(), "D");
    if (task_curvature.size() != tasks.n_tasks())
        throw std::invalid_argument("task_curvature has the wrong size");
    for_each_task(tasks, n_threads, double(tasks.n_features()), [&](Index t) {
        task_curvature[t] = curvature_row(tasks, t, D.row(t).data());
    });
}

}  // namespace metasp
