#include "metasp/newton.hpp"

#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"
#include "metasp/small_cholesky.hpp"
#include "metasp/task_gram.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <limits>

namespace metasp {
namespace {

// Below this bound on its condition number, the pseudo-inverse of A_t below (which drops
// eigenvalues under 1e-12 of the largest) is its plain inverse.
constexpr double kNewtonCondition = 1e8;

using rows::kPrefetchRows;

// out(j.., c) = sum_i C(i, c) x_i(j..) for G columns of C (row pitch ldc) on U packs of
// features from j, accumulated in registers over all rows; with Squares also squares(j..) =
// sum_i x_i(j..)^2 and a prefetch of the same features of the next `rows` rows (this is the
// first pass over X_t: the next task's rows follow). Overwrites out (column pitch ldo).
template <int G, int U, bool Squares, class Scalar>
METASP_ALWAYS_INLINE void transposed_packs(const Scalar* X, Index pitch, Index rows, Index j,
                                           const double* C, Index ldc, double* out, Index ldo,
                                           double* squares) {
    using rows::Pack;
    Pack acc[G][U] = {}, square[U] = {};
    for (Index i = 0; i < rows; ++i) {
        Pack x[U];
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) x[u] = rows::load(X + i * pitch + j + u * rows::kPack);
#pragma GCC unroll 8
        for (int c = 0; c < G; ++c) {
            const Pack coefficient = rows::broadcast(C[i * ldc + c]);
#pragma GCC unroll 8
            for (int u = 0; u < U; ++u) acc[c][u] += coefficient * x[u];
        }
        if (Squares) {
            __builtin_prefetch(X + (i + rows) * pitch + j);
#pragma GCC unroll 8
            for (int u = 0; u < U; ++u) square[u] += x[u] * x[u];
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < G; ++c)
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) rows::store(out + c * ldo + j + u * rows::kPack, acc[c][u]);
    if (Squares) {
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) rows::store(squares + j + u * rows::kPack, square[u]);
    }
}

// G columns of C over all d features: packs of U, then single packs, then scalars.
template <int G, int U, bool Squares, class Scalar>
METASP_ALWAYS_INLINE void transposed_columns(const Scalar* X, Index pitch, Index rows, Index d,
                                             const double* C, Index ldc, double* out, Index ldo,
                                             double* squares) {
    Index j = 0;
    for (; j + U * rows::kPack <= d; j += U * rows::kPack)
        transposed_packs<G, U, Squares>(X, pitch, rows, j, C, ldc, out, ldo, squares);
    for (; j + rows::kPack <= d; j += rows::kPack)
        transposed_packs<G, 1, Squares>(X, pitch, rows, j, C, ldc, out, ldo, squares);
    for (; j < d; ++j) {
        double acc[G] = {}, square = 0;
        for (Index i = 0; i < rows; ++i) {
            const double x = double(X[i * pitch + j]);
            for (int c = 0; c < G; ++c) acc[c] += C[i * ldc + c] * x;
            square += x * x;
        }
        for (int c = 0; c < G; ++c) out[c * ldo + j] = acc[c];
        if (Squares) squares[j] = square;
    }
}

// out = X^T C (d x n, column-major) for C (rows x n, row-major), and when asked for, squares =
// sum_i x_i * x_i (d): columns four at a time (the register tile is 4 columns x 8 features),
// with the squares in the first group; X_t stays in cache between the groups.
template <class Scalar>
METASP_CPU_DISPATCH void transposed_rows(const Scalar* X, Index pitch, Index rows, Index d,
                                         const double* C, Index n, double* out,
                                         double* squares = nullptr) {
    Index c = 0;
    if (squares == nullptr) {
        // no first pass with the squares
    } else if (n >= 4) {
        transposed_columns<4, 2, true>(X, pitch, rows, d, C, n, out, d, squares);
        c = 4;
    } else if (n >= 2) {
        transposed_columns<2, 2, true>(X, pitch, rows, d, C, n, out, d, squares);
        c = 2;
    } else {
        transposed_columns<1, 2, true>(X, pitch, rows, d, C, n, out, d, squares);
        c = 1;
    }
    for (; c + 4 <= n; c += 4)
        transposed_columns<4, 2, false>(X, pitch, rows, d, C + c, n, out + c * d, d, nullptr);
    if (c + 2 <= n) {
        transposed_columns<2, 4, false>(X, pitch, rows, d, C + c, n, out + c * d, d, nullptr);
        c += 2;
    }
    if (c < n)
        transposed_columns<1, 4, false>(X, pitch, rows, d, C + c, n, out + c * d, d, nullptr);
}

// out += p w^T + g c^T for out (d x s, column-major).
METASP_CPU_DISPATCH
void add_outer_pair(double* out, Index d, Index s, const double* p, const double* w,
                    const double* g, const double* c) {
    for (Index k = 0; k < s; ++k) {
        double* column = out + k * d;
        const double wk = w[k], ck = c[k];
#pragma omp simd
        for (Index j = 0; j < d; ++j) column[j] += wk * p[j] + ck * g[j];
    }
}

// A task's share of the Newton operator's right-hand side and of its diagonal (d x s each):
// rhs += g w^T and, block (a, a), diagonal_a += w_a^2 (S - u K)_jj + 2 w_a u_a g - (A^+)_aa g^2,
// from KtG = [Kt g] (d x (s + 1)), u = Kt A^+ (d x s) and squares = diag(S), which it
// overwrites with diag(S - u K).
METASP_CPU_DISPATCH
void newton_diagonal(const double* KtG, const double* u, double* squares, const double* Ainv,
                     const double* w, Index d, Index s, double* rhs, double* diagonal) {
    const double* g = KtG + s * d;
    for (Index b = 0; b < s; ++b) {
        const double *ub = u + b * d, *kb = KtG + b * d;
#pragma omp simd
        for (Index j = 0; j < d; ++j) squares[j] -= ub[j] * kb[j];
    }
    for (Index a = 0; a < s; ++a) {
        const double* ua = u + a * d;
        double *r = rhs + a * d, *diag = diagonal + a * d;
        const double wa = w[a], wa2 = w[a] * w[a], ainv = Ainv[a * s + a];
#pragma omp simd
        for (Index j = 0; j < d; ++j) {
            r[j] += wa * g[j];
            diag[j] += wa2 * squares[j] + 2 * wa * ua[j] * g[j] - ainv * g[j] * g[j];
        }
    }
}

// Task chunks of the matrix-free Newton operator's sums: fixed by T alone (results do not
// depend on the thread count), many enough to balance the threads.
Index operator_chunks(Index T) { return std::clamp<Index>(T / 16, 1, 64); }

// out_i = x_i . v over the `rows` rows starting at X (row pitch `pitch`), on the packed row
// kernels of row_kernels.hpp; float X is converted on load, as in gradient.cpp.
template <class Scalar>
struct RowDots {
    const Scalar* X;
    Index pitch, d;
    const double* v;
    double* out;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        prefetch_rows(X + (i + kPrefetchRows) * pitch, R * pitch);
        double dot[R][1];
        rows::dots<R, 1, 8 / R>(X + i * pitch, pitch, d, &v, dot);
        for (int k = 0; k < R; ++k) out[i + k] = dot[k][0];
    }
};

template <class Scalar>
METASP_CPU_DISPATCH void row_dots(const Scalar* X, Index pitch, Index rows, Index d,
                                  const double* v, double* out) {
    RowDots<Scalar> block{X, pitch, d, v, out};
    rows::for_row_blocks<8>(rows, block);
}

// p = sum_i c_i x_i over the same rows, prefetching `ahead` rows ahead (0: none).
template <class Scalar>
struct RowCombination {
    const Scalar* X;
    Index pitch, d;
    const double* c;
    double* p;
    Index ahead;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        if (ahead > 0) prefetch_rows(X + (i + ahead) * pitch, R * pitch);
        rows::add_rows<R>(X + i * pitch, pitch, d, c + i, p);
    }
};

template <class Scalar>
METASP_CPU_DISPATCH void row_combination(const Scalar* X, Index pitch, Index rows, Index d,
                                         const double* c, double* p, Index ahead = 0) {
    for (Index j = 0; j < d; ++j) p[j] = 0;
    RowCombination<Scalar> block{X, pitch, d, c, p, ahead};
    rows::for_row_blocks<4>(rows, block);
}

// c = A^+ (Z^T x / m - h) (s) and x <- (x - Z c) / m (m) for a task's Zt = Z^T (s x m,
// row-major) and A^+ (s x s, symmetric): the middle step of a Newton operator product, with
// both products along the samples on the row kernels.
METASP_CPU_DISPATCH
void remove_span(const double* Zt, Index m, Index s, const double* Ainv, const double* h,
                 double inv_m, double* x, double* k, double* c) {
    RowDots<double> dots{Zt, m, m, x, k};
    rows::for_row_blocks<8>(s, dots);
    for (Index a = 0; a < s; ++a) k[a] = inv_m * k[a] - h[a];
    for (Index a = 0; a < s; ++a) {
        double sum = 0;
        for (Index b = 0; b < s; ++b) sum += Ainv[a * s + b] * k[b];
        c[a] = sum;
    }
    for (Index a = 0; a < s; ++a) k[a] = -c[a];
    RowCombination<double> combination{Zt, m, m, k, x, 0};
    rows::for_row_blocks<4>(s, combination);
    for (Index i = 0; i < m; ++i) x[i] *= inv_m;
}

}  // namespace

// The work of forming the dense system over that of one operator product, so that a solve
// that does not converge (and is then redone densely) costs at most twice the dense one.
int newton_cg_budget(const TasksView& tasks, Index s, NewtonSolve how) {
    const double N = double(tasks.n_samples()), T = double(tasks.n_tasks()),
                 d = double(tasks.n_features());
    const double dense_work = 0.5 * N * d * d + 2.0 * T * s * (s + 1) * d * d;
    const double product_work = 2.0 * N * d + 6.0 * T * d * s;
    const int budget = int(std::min(d * s, std::floor(dense_work / product_work)));
    switch (how) {
        case NewtonSolve::dense: return 0;
        case NewtonSolve::iterative: return int(d * s);
        case NewtonSolve::automatic: break;
    }
    return budget >= kMinNewtonCG ? budget : 0;
}

// X is read in place (float or double), in one pass from memory (the column groups after the
// first find X_t in cache).
void newton_task_terms(const TasksView& tasks, Index t, const Matrix& V, const double* w,
                       NewtonTaskTerms& out, const double* Z) {
    const Index m = tasks.size(t), d = V.rows(), s = V.cols(), begin = tasks.begin(t);
    const Index pitch = tasks.X.pitch(), n = s + 1;
    const double inv_m = 1.0 / double(m);
    if (Z == nullptr) {
        out.Z.resize(static_cast<size_t>(m * s));
        project_task_rows(tasks, t, V.data(), d, s, out.Z.data());
        Z = out.Z.data();
    }
    const double* y = tasks.y.data() + begin;
    out.C.resize(static_cast<size_t>(m * n));
    for (Index i = 0; i < m; ++i) {
        double r = y[i];
        for (Index k = 0; k < s; ++k) {
            out.C[i * n + k] = inv_m * Z[i * s + k];
            r -= Z[i * s + k] * w[k];
        }
        out.C[i * n + s] = inv_m * r;
    }
    out.KtG.resize(d, n);
    out.squares.resize(d);
    tasks.X.visit([&](const auto* X) {
        transposed_rows(X + begin * pitch, pitch, m, d, out.C.data(), n, out.KtG.data(),
                        out.squares.data());
    });
    out.squares *= inv_m;
    out.A.resize(s, s);
    out.L.resize(static_cast<size_t>(s * s));
    out.L_inv.resize(static_cast<size_t>(s * s));
    out.Ainv.resize(s, s);
    out.Zt.resize(static_cast<size_t>(m * s));
    scaled_gram(Z, m, s, inv_m, nullptr, out.A.data(), nullptr, out.Zt.data());
    // A is symmetric: its row-major and column-major layouts are the same buffer.
    if (well_conditioned_cholesky(out.A.data(), s, kNewtonCondition, out.L.data(),
                                  out.L_inv.data())) {
        inverse_from_lower_inverse(out.L_inv.data(), s, out.Ainv.data());
    } else {
        const Eigen::SelfAdjointEigenSolver<Matrix> eig(out.A);
        const Vector& lambda = eig.eigenvalues();
        const double cutoff = 1e-12 * std::max(lambda.maxCoeff(), 0.0);
        Vector inv_lambda(s);
        for (Index j = 0; j < s; ++j) inv_lambda[j] = lambda[j] > cutoff ? 1.0 / lambda[j] : 0.0;
        out.Ainv.noalias() =
            eig.eigenvectors() * inv_lambda.asDiagonal() * eig.eigenvectors().transpose();
    }
    out.u.resize(d, s);
    // u = Kt A^+ = (Kt^T)^T A^+: the rows of Kt^T are Kt's columns, A^+ is symmetric.
    transposed_rows(out.KtG.data(), d, s, d, out.Ainv.data(), s, out.u.data());
}

template <class Body>
void NewtonOperator::for_chunks(double work_per_sample, Body body) const {
    const Index T = tasks_.n_tasks(), n_chunks = operator_chunks(T);
    const bool parallel = run_parallel(n_threads_, double(tasks_.n_samples()) * work_per_sample);
#pragma omp parallel for num_threads(thread_cap(n_threads_)) if (parallel) schedule(dynamic, 1)
    for (Index c = 0; c < n_chunks; ++c)
        body(c, chunk_begin(c, n_chunks, T), chunk_begin(c + 1, n_chunks, T));
}

Matrix NewtonOperator::sum_in_order(std::vector<Matrix>& partial) {
    Matrix total = std::move(partial[0]);
    for (size_t c = 1; c < partial.size(); ++c) total += partial[c];
    return total;
}

NewtonOperator::NewtonOperator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                               const Matrix& V, RowMatrix Z, int n_threads)
    : tasks_(tasks), W_(W), V_(V), n_threads_(n_threads), Z_(std::move(Z)) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V.cols();
    G_.resize(T, d);
    Ainv_.resize(T * s, s);
    const Index n_chunks = operator_chunks(T);
    std::vector<Matrix> rhs(static_cast<size_t>(n_chunks)), diagonal(static_cast<size_t>(n_chunks));
    for_chunks(4.0 * d * s, [&](Index c, Index t0, Index t1) {
        rhs[c].setZero(d, s);
        diagonal[c].setZero(d, s);
        NewtonTaskTerms terms;
        for (Index t = t0; t < t1; ++t) {
            const double* w = W.row(t).data();
            const Index m = tasks.size(t), begin = tasks.begin(t);
            newton_task_terms(tasks, t, V, w, terms, Z_.data() + begin * s);
            // The task's rows of Z are read only as Z_t^T from now on (remove_span).
            std::copy(terms.Zt.begin(), terms.Zt.begin() + m * s, Z_.data() + begin * s);
            G_.row(t) = terms.g().transpose();
            Ainv_.middleRows(t * s, s) = terms.Ainv;
            newton_diagonal(terms.KtG.data(), terms.u.data(), terms.squares.data(),
                            terms.Ainv.data(), w, d, s, rhs[c].data(), diagonal[c].data());
        }
    });
    rhs_ = sum_in_order(rhs);
    diagonal_ = sum_in_order(diagonal);
    scale_ = std::max(diagonal_.mean(), std::numeric_limits<double>::min());
}

namespace {

// X V (N x s, row-major), task by task.
RowMatrix projected_rows(const TasksView& tasks, const Matrix& V, int n_threads) {
    const Index s = V.cols();
    RowMatrix Z(tasks.n_samples(), s);
    for_each_task(tasks, n_threads, 2.0 * double(V.rows()) * double(s), [&](Index t) {
        project_task_rows(tasks, t, V.data(), V.outerStride(), s, Z.data() + tasks.begin(t) * s);
    });
    return Z;
}

}  // namespace

NewtonOperator::NewtonOperator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                               const Matrix& V, int n_threads)
    : NewtonOperator(tasks, W, V, projected_rows(tasks, V, n_threads), n_threads) {}

Matrix NewtonOperator::apply(const Matrix& D, double shift) const {
    Matrix out = apply_tasks(D);
    out.noalias() += scale_ * (V_ * (V_.transpose() * D));
    out += shift * D;
    return out;
}

Matrix NewtonOperator::apply_tasks(const Matrix& D) const {
    const Index T = tasks_.n_tasks(), d = D.rows(), s = D.cols();
    const Index n_chunks = operator_chunks(T);
    std::vector<Matrix> partial(static_cast<size_t>(n_chunks));
    for_chunks(2.0 * d, [&](Index c, Index t0, Index t1) {
        Matrix& out = partial[c];
        out.setZero(d, s);
        Vector v(d), h(s), k(s), coef(s), p(d);
        std::vector<double> xv;
        const Index pitch = tasks_.X.pitch();
        for (Index t = t0; t < t1; ++t) {
            const Index m = tasks_.size(t), begin = tasks_.begin(t);
            const double *g = G_.row(t).data(), *w = W_.row(t).data();
            // v = D w and h = D^T g: D's columns are the rows of these row kernels.
            row_combination(D.data(), d, s, d, w, v.data());
            row_dots(D.data(), d, s, d, g, h.data());
            xv.resize(static_cast<size_t>(m));
            // X_t read in place (float or double): this runs once per CG iteration.
            tasks_.X.visit([&](const auto* X) {
                row_dots(X + begin * pitch, pitch, m, d, v.data(), xv.data());
            });
            remove_span(Z_.data() + begin * s, m, s, Ainv_.data() + t * s * s, h.data(),
                        1.0 / double(m), xv.data(), k.data(), coef.data());
            tasks_.X.visit([&](const auto* X) {
                // X_t is in cache now; ask for the next task's rows (they follow), so that
                // memory keeps streaming while this pass and the small terms compute.
                row_combination(X + begin * pitch, pitch, m, d, xv.data(), p.data(), m);
            });
            add_outer_pair(out.data(), d, s, p.data(), w, g, coef.data());
        }
    });
    return sum_in_order(partial);
}

Matrix NewtonOperator::precondition(const Matrix& R, double shift) const {
    const Index s = R.cols();
    Matrix out(R.rows(), s);
    for (Index a = 0; a < s; ++a) {
        const Vector inv =
            (diagonal_.col(a).array() + shift).max(kMinPreconditioner * scale_).inverse().matrix();
        const Matrix DV = inv.asDiagonal() * V_;
        Matrix capacity = V_.transpose() * DV;
        capacity.diagonal().array() += 1.0 / scale_;
        const Vector x = inv.cwiseProduct(R.col(a));
        out.col(a) = x - DV * capacity.llt().solve(V_.transpose() * x);
    }
    return out;
}

// Stops at a relative residual of kNewtonCGTol or a preconditioned residual below
// max(floor, kQuadraticFloor ||D||^2).
CGOutcome newton_cg(const NewtonOperator& op, double shift, int max_iter, double floor, Matrix& D,
                    const StopRequested& stop) {
    const Matrix& rhs = op.rhs();
    D.setZero(rhs.rows(), rhs.cols());
    Matrix residual = rhs, z = op.precondition(residual, shift), direction = z;
    double rz = (residual.array() * z.array()).sum();
    const double target = kNewtonCGTol * kNewtonCGTol * rhs.squaredNorm();
    if (residual.squaredNorm() <= target || z.norm() <= floor) return CGOutcome::converged;
    for (int k = 0; k < max_iter; ++k) {
        if (stop && stop()) return CGOutcome::stopped;
        const Matrix applied = op.apply(direction, shift);
        const double curvature = (direction.array() * applied.array()).sum();
        if (!(curvature > 0)) return CGOutcome::indefinite;
        const double alpha = rz / curvature;
        D += alpha * direction;
        residual -= alpha * applied;
        if (residual.squaredNorm() <= target) return CGOutcome::converged;
        z = op.precondition(residual, shift);
        if (z.norm() <= std::max(floor, kQuadraticFloor * D.squaredNorm()))
            return CGOutcome::converged;
        const double rz_next = (residual.array() * z.array()).sum();
        direction = z + (rz_next / rz) * direction;
        rz = rz_next;
    }
    return CGOutcome::unconverged;
}

}  // namespace metasp
