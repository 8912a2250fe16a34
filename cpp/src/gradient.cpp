#include "metasp/gradient.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"

#include <stdexcept>

namespace metasp {
namespace {

void check_shape(const TasksView& tasks, Index rows, Index cols, Index expected_cols,
                 const char* name) {
    if (rows != tasks.n_tasks() || cols != expected_cols)
        throw std::invalid_argument(std::string(name) + " has the wrong shape");
}

// The row loops below run on the packs of row_kernels.hpp, in blocks of up to 8 rows (8
// independent multiply-add chains per block), compiled twice (see METASP_CPU_DISPATCH), each
// for float and double rows; every element is converted to double as it is loaded.

// sum_i (x_i . p)^2 over the `rows` rows starting at X (row pitch `pitch`).
template <class Scalar>
struct SquaredDots {
    const Scalar* X;
    Index pitch, d;
    const double* p;
    double sum = 0;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        double dot[R][1];
        rows::dots<R, 1, 8 / R>(X + i * pitch, pitch, d, &p, dot);
        double block = 0;
        for (int k = 0; k < R; ++k) block += dot[k][0] * dot[k][0];
        sum += block;
    }
};

template <class Scalar>
METASP_ALWAYS_INLINE double squared_dots(const Scalar* X, Index pitch, Index rows, Index d,
                                         const double* p) {
    SquaredDots<Scalar> block{X, pitch, d, p};
    rows::for_row_blocks<8>(rows, block);
    return block.sum;
}

template <class Scalar>
METASP_CPU_DISPATCH double sum_squared_dots(const Scalar* X, Index pitch, Index rows, Index d,
                                            const double* p) {
    return squared_dots(X, pitch, rows, d, p);
}

using rows::kPrefetchRows;

// g += sum_i r_i x_i and loss += sum_i r_i^2 for r_i = y_i - x_i . theta: each block of rows
// is read from memory once for both its residuals and its gradient term.
template <class Scalar>
struct ResidualRows {
    const Scalar* X;
    Index pitch, rows, d;
    const double *y, *theta;
    double* g;
    double loss = 0;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        const Scalar* x0 = X + i * pitch;
        prefetch_rows(x0 + kPrefetchRows * pitch, R * pitch);
        double dot[R][1], r[R], block = 0;
        rows::dots<R, 1, 8 / R>(x0, pitch, d, &theta, dot);
        for (int k = 0; k < R; ++k) {
            r[k] = y[i + k] - dot[k][0];
            block += r[k] * r[k];
        }
        rows::add_rows<R>(x0, pitch, d, r, g);
        loss += block;
    }
};

// g = sum_i r_i x_i / rows and returns sum_i r_i^2 / rows, for r_i = y_i - x_i . theta.
template <class Scalar>
METASP_ALWAYS_INLINE double mean_residual(const Scalar* X, Index pitch, const double* y, Index rows,
                                          Index d, const double* theta, double* g) {
    for (Index j = 0; j < d; ++j) g[j] = 0;
    ResidualRows<Scalar> block{X, pitch, rows, d, y, theta, g};
    rows::for_row_blocks<4>(rows, block);
    const double inverse = 1.0 / double(rows);
    for (Index j = 0; j < d; ++j) g[j] *= inverse;
    return block.loss * inverse;
}

template <class Scalar>
METASP_CPU_DISPATCH double residual_rows(const Scalar* X, Index pitch, const double* y, Index rows,
                                         Index d, const double* theta, double* g) {
    return mean_residual(X, pitch, y, rows, d, theta, g);
}

// p += V_b (V_b^T g) and norm += ||V_b^T g||^2 over blocks V_b of the columns of V: the
// columns are the "rows" of row_kernels.hpp (pitch ldv), so a block's dots run as independent
// chains and p is loaded and stored once per block.
struct ProjectColumns {
    const double* V;
    Index ldv, d;
    const double* g;
    double *p, *coefficients;
    double norm = 0;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index j, std::integral_constant<int, R>) {
        double dot[R][1], c[R];
        rows::dots<R, 1, 8 / R>(V + j * ldv, ldv, d, &g, dot);
        for (int k = 0; k < R; ++k) {
            c[k] = dot[k][0];
            norm += c[k] * c[k];
            if (coefficients != nullptr) coefficients[j + k] = c[k];
        }
        rows::add_rows<R>(V + j * ldv, ldv, d, c, p);
    }
};

// p = V (V^T g) for V (d x s, column pitch ldv) with orthonormal columns, and V^T g into
// `coefficients` when given; returns ||V^T g||^2 = ||p||^2. On tasks of a few rows this costs
// as much as the pass over X_t itself.
METASP_ALWAYS_INLINE
double project(const double* V, Index ldv, Index d, Index s, const double* g, double* p,
               double* coefficients = nullptr) {
    for (Index i = 0; i < d; ++i) p[i] = 0;
    ProjectColumns block{V, ldv, d, g, p, coefficients};
    rows::for_row_blocks<4>(s, block);
    return block.norm;
}

struct FusedSums {
    double loss, projected, curvature;
};

// The fused pass over one task in a single dispatched call (one run-time dispatch per task
// instead of three): g and the loss as residual_rows, p = V (V^T g) and its norm, and
// ||X_t p||^2 / rows while X_t is still in cache.
template <class Scalar>
METASP_CPU_DISPATCH FusedSums fused_rows(const Scalar* X, Index pitch, const double* y, Index rows,
                                         Index d, const double* theta, double* g, const double* V,
                                         Index ldv, Index s, double* p) {
    FusedSums sums;
    sums.loss = mean_residual(X, pitch, y, rows, d, theta, g);
    sums.projected = project(V, ldv, d, s, g, p);
    sums.curvature = squared_dots(X, pitch, rows, d, p) / double(rows);
    return sums;
}

// ResidualRows with a second vector q: also xq_i = x_i . q (into xq) and sum_i xq_i^2, from the
// same dot-product blocks (2 vectors x up to 4 rows: 8 independent chains).
template <class Scalar>
struct ResidualPairRows {
    const Scalar* X;
    Index pitch, d;
    const double* y;
    const double* vectors[2];  // theta, q
    double *g, *xq;
    double loss = 0, qq = 0;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        const Scalar* x0 = X + i * pitch;
        prefetch_rows(x0 + kPrefetchRows * pitch, R * pitch);
        double dot[R][2], r[R], block = 0, squares = 0;
        rows::dots<R, 2, 4 / R>(x0, pitch, d, vectors, dot);
        for (int k = 0; k < R; ++k) {
            r[k] = y[i + k] - dot[k][0];
            block += r[k] * r[k];
            xq[i + k] = dot[k][1];
            squares += dot[k][1] * dot[k][1];
        }
        rows::add_rows<R>(x0, pitch, d, r, g);
        loss += block;
        qq += squares;
    }
};

// sum_i (x_i . p)^2 and sum_i (x_i . p) xq_i.
template <class Scalar>
struct CrossRows {
    const Scalar* X;
    Index pitch, d;
    const double *p, *xq;
    double pp = 0, pq = 0;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        double dot[R][1];
        rows::dots<R, 1, 8 / R>(X + i * pitch, pitch, d, &p, dot);
        for (int k = 0; k < R; ++k) {
            pp += dot[k][0] * dot[k][0];
            pq += dot[k][0] * xq[i + k];
        }
    }
};

struct ConjugateSums {
    double loss, aa, ad, dd;
};

// One task's pass of conjugate-direction IHT, X_t read from memory once: q = V V^T direction
// (its coefficients into cd), the residuals, g and the loss, X_t q alongside X_t theta; then
// a = V V^T g (coefficients into cg) and X_t a while X_t is still in cache. xq: `rows` doubles
// of scratch; a, q: d each.
template <class Scalar>
METASP_CPU_DISPATCH ConjugateSums conjugate_rows(const Scalar* X, Index pitch, const double* y,
                                                 Index rows, Index d, const double* theta,
                                                 const double* direction, double* g,
                                                 const double* V, Index ldv, Index s, double* cg,
                                                 double* cd, double* a, double* q, double* xq) {
    project(V, ldv, d, s, direction, q, cd);
    for (Index j = 0; j < d; ++j) g[j] = 0;
    ResidualPairRows<Scalar> first{X, pitch, d, y, {theta, q}, g, xq};
    rows::for_row_blocks<4>(rows, first);
    const double inverse = 1.0 / double(rows);
    for (Index j = 0; j < d; ++j) g[j] *= inverse;
    project(V, ldv, d, s, g, a, cg);
    CrossRows<Scalar> second{X, pitch, d, a, xq};
    rows::for_row_blocks<8>(rows, second);
    return {first.loss * inverse, second.pp * inverse, second.pq * inverse, first.qq * inverse};
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
    return tasks.X.visit([&](const auto* X) {
        return residual_rows(X + begin * pitch, pitch, tasks.y.data() + begin, m, d, theta, g);
    });
}

void check_gradient_arguments(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                              const Eigen::Ref<RowMatrix>& G, const Eigen::Ref<Vector>& task_loss) {
    check_tasks(tasks);
    check_shape(tasks, Theta.rows(), Theta.cols(), tasks.n_features(), "Theta");
    check_shape(tasks, G.rows(), G.cols(), tasks.n_features(), "G");
    if (task_loss.size() != tasks.n_tasks())
        throw std::invalid_argument("task_loss has the wrong size");
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
    const Index d = tasks.n_features(), pitch = tasks.X.pitch();
    for_each_task(tasks, n_threads, 3.0 * d, [&](Index t) {
        thread_local Vector direction;
        direction.resize(d);
        const Index begin = tasks.begin(t);
        const FusedSums sums = tasks.X.visit([&](const auto* X) {
            return fused_rows(X + begin * pitch, pitch, tasks.y.data() + begin, tasks.size(t), d,
                              Theta.row(t).data(), G.row(t).data(), V.data(), V.outerStride(),
                              V.cols(), direction.data());
        });
        task_loss[t] = sums.loss;
        projected[t] = sums.projected;
        curvature[t] = sums.curvature;
    });
}

void task_gradient_conjugate(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                             const Eigen::Ref<const RowMatrix>& D, Eigen::Ref<RowMatrix> G,
                             Eigen::Ref<Vector> task_loss, const Eigen::Ref<const Matrix>& V,
                             Eigen::Ref<RowMatrix> CG, Eigen::Ref<RowMatrix> CD,
                             Eigen::Ref<Vector> aa, Eigen::Ref<Vector> ad, Eigen::Ref<Vector> dd,
                             int n_threads) {
    check_gradient_arguments(tasks, Theta, G, task_loss);
    check_shape(tasks, D.rows(), D.cols(), tasks.n_features(), "D");
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V.cols(), pitch = tasks.X.pitch();
    if (V.rows() != d) throw std::invalid_argument("V must have d rows");
    check_shape(tasks, CG.rows(), CG.cols(), s, "CG");
    check_shape(tasks, CD.rows(), CD.cols(), s, "CD");
    if (aa.size() != T || ad.size() != T || dd.size() != T)
        throw std::invalid_argument("aa, ad and dd need one entry per task");
    for_each_task(tasks, n_threads, 4.0 * d, [&](Index t) {
        thread_local Vector a, q, xq;
        a.resize(d);
        q.resize(d);
        xq.resize(tasks.size(t));
        const Index begin = tasks.begin(t);
        const ConjugateSums sums = tasks.X.visit([&](const auto* X) {
            return conjugate_rows(X + begin * pitch, pitch, tasks.y.data() + begin, tasks.size(t),
                                  d, Theta.row(t).data(), D.row(t).data(), G.row(t).data(),
                                  V.data(), V.outerStride(), s, CG.row(t).data(), CD.row(t).data(),
                                  a.data(), q.data(), xq.data());
        });
        task_loss[t] = sums.loss;
        aa[t] = sums.aa;
        ad[t] = sums.ad;
        dd[t] = sums.dd;
    });
}

void task_loss(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
               Eigen::Ref<Vector> task_loss, int n_threads) {
    check_tasks(tasks);
    check_shape(tasks, Theta.rows(), Theta.cols(), tasks.n_features(), "Theta");
    if (task_loss.size() != tasks.n_tasks())
        throw std::invalid_argument("task_loss has the wrong size");
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
    for_each_task(tasks, n_threads, double(tasks.n_features()),
                  [&](Index t) { task_curvature[t] = curvature_row(tasks, t, D.row(t).data()); });
}

}  // namespace metasp
