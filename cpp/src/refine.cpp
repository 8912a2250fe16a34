#include "metasp/refine.hpp"

#include "metasp/gradient.hpp"
#include "metasp/parallel.hpp"
#include "metasp/row_kernels.hpp"
#include "metasp/small_cholesky.hpp"
#include "metasp/solver.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>

namespace metasp {
namespace {

// Summed in task order, so the value does not depend on the thread count.
double mean(const Vector& values) {
    double total = 0;
    for (Index t = 0; t < values.size(); ++t) total += values[t];
    return total / double(values.size());
}

template <class Body>
void for_each_task(const TasksView& tasks, int n_threads, double work_per_sample, Body body) {
    const Index T = tasks.n_tasks();
    const bool parallel = run_parallel(n_threads, double(tasks.n_samples()) * work_per_sample);
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(dynamic, 16)
    for (Index t = 0; t < T; ++t) body(t);
}

// Task chunks of the dense normal-equation accumulation: fixed by the shape alone (never by
// the thread count, so sums are identical with any number of threads), and few enough that
// the per-chunk (d s) x (d s) accumulators stay within about 64 MB.
Index normal_chunks(Index T, Index n) {
    const double bytes = 8.0 * double(n) * double(n);
    const Index by_memory = std::max<Index>(1, Index(64e6 / bytes));
    return std::clamp<Index>(T / 32, 1, std::min<Index>(16, by_memory));
}

enum class BasisStep { als, newton };

// Relative residual at which the conjugate-gradient Newton solve stops: an inexact Newton step
// with this forcing term still converges superlinearly, to the same stationary point.
constexpr double kNewtonCGTol = 1e-6;
// ... or once the error left in the step D is below this fraction of tol: V is orthonormal and
// ||Theta|| = ||W|| in canonical form, so it moves Theta by less than kStepFloor tol relative,
// far below what the stopping rule can see (this saves most of the iterations of the last,
// confirming sweep).
constexpr double kStepFloor = 1e-3;
// ... or once that error is below this factor times ||D||^2: the Newton step itself leaves an
// error of order ||D||^2 (quadratic convergence), so solving more exactly gains nothing.
constexpr double kQuadraticFloor = 0.1;
// Fewest iterations the work estimate must allow before the iterative Newton solve is tried.
constexpr int kMinNewtonCG = 20;

// Most preconditioned conjugate-gradient iterations a Newton solve may take (0: solve densely):
// the work of forming the dense system over that of one operator product, so that a solve
// that does not converge (and is then redone densely) costs at most twice the dense one.
int newton_cg_budget(const TasksView& tasks, Index s, NewtonSolve how) {
    const double N = double(tasks.n_samples()), T = double(tasks.n_tasks()), d = double(tasks.n_features());
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

struct NormalSystem {
    Matrix M;      // lower triangle: sum over tasks, plus the gauge penalty for newton
    Vector rhs;
    double scale;  // mean diagonal entry: the unit of the damping shift
};

// Below this bound on its condition number, the pseudo-inverse of A_t below (which drops
// eigenvalues under 1e-12 of the largest) is its plain inverse.
constexpr double kNewtonCondition = 1e8;
// Below this bound on cond(Z_t^T Z_t), the heads are solved from the normal equations by
// Cholesky: their error, about cond * 1e-16 relative, stays at rounding level (the orthogonal
// decomposition's own error grows with cond(Z_t)^2 too once the residual is not tiny).
constexpr double kHeadsCondition = 1e4;

// L with A = L L^T and L_inv = L^-1 (s x s, row-major, lower triangles; small_cholesky.hpp)
// for the symmetric A. True when A is positive definite and cond(A) provably below
// max_condition: lambda_max <= trace(A), lambda_min >= 1 / ||L^-1||_F^2.
bool well_conditioned_cholesky(const double* A, Index s, double max_condition, double* L,
                               double* L_inv) {
    if (!cholesky(A, s, L)) return false;
    lower_inverse(L, s, L_inv);
    double trace = 0, inverse_norm = 0;
    for (Index i = 0; i < s; ++i) {
        trace += A[i * s + i];
        for (Index j = 0; j <= i; ++j) inverse_norm += L_inv[i * s + j] * L_inv[i * s + j];
    }
    return trace * inverse_norm < max_condition;
}

// G = Z^T Z * scale (s x s, column-major, both triangles) and, when y is given, b = Z^T y,
// for Z (m x s, row-major): through Zt = Z^T (s x m, the caller's buffer), so that every entry
// is a dot product along the samples on the packed kernels rather than a chain of m
// dependent multiply-adds.
METASP_CPU_DISPATCH
void scaled_gram(const double* Z, Index m, Index s, double scale, const double* y, double* G,
                 double* b, double* Zt) {
    for (Index i = 0; i < m; ++i)
        for (Index a = 0; a < s; ++a) Zt[a * m + i] = Z[i * s + a];
    for (Index a = 0; a < s; ++a) {
        const double* za = Zt + a * m;
        for (Index c = 0; c <= a; ++c) {
            const double* zc = Zt + c * m;
            double dot[1][1];
            rows::dots<1, 1, 2>(za, m, m, &zc, dot);
            G[a * s + c] = G[c * s + a] = scale * dot[0][0];
        }
        if (y != nullptr) {
            double dot[1][1];
            rows::dots<1, 1, 2>(za, m, m, &y, dot);
            b[a] = dot[0][0];
        }
    }
}

using rows::kPrefetchRows;

// Z = X V (rows x s, row-major) for the `rows` rows starting at X (row pitch `pitch`) and V
// (d x s, column-major with column pitch ldv), in blocks of up to 4 rows (rows::project),
// asking for the lines kPrefetchRows rows ahead: this is a first pass over X_t.
template <class Scalar>
struct ProjectRows {
    const Scalar* X;
    Index pitch, d;
    const double* V;
    Index ldv, s;
    double* Z;

    template <int R>
    METASP_ALWAYS_INLINE void operator()(Index i, std::integral_constant<int, R>) {
        prefetch_rows(X + (i + kPrefetchRows) * pitch, R * pitch);
        rows::project<R>(X + i * pitch, pitch, d, V, ldv, s, Z + i * s);
    }
};

template <class Scalar>
METASP_CPU_DISPATCH void project_rows(const Scalar* X, Index pitch, Index rows, Index d,
                                      const double* V, Index ldv, Index s, double* Z) {
    ProjectRows<Scalar> block{X, pitch, d, V, ldv, s, Z};
    rows::for_row_blocks<4>(rows, block);
}

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
    for (; c + 4 <= n; c += 4) transposed_columns<4, 2, false>(X, pitch, rows, d, C + c, n, out + c * d, d, nullptr);
    if (c + 2 <= n) {
        transposed_columns<2, 4, false>(X, pitch, rows, d, C + c, n, out + c * d, d, nullptr);
        c += 2;
    }
    if (c < n) transposed_columns<1, 4, false>(X, pitch, rows, d, C + c, n, out + c * d, d, nullptr);
}

// out += p w^T + g c^T for out (d x s, column-major).
METASP_CPU_DISPATCH
void add_outer_pair(double* out, Index d, Index s, const double* p, const double* w, const double* g,
                    const double* c) {
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

// Per-task terms of the Newton system at (w_t, V): Z_t = X_t V, the gradient g_t = X_t^T
// (y_t - Z_t w_t) / m_t, Kt_t = X_t^T Z_t / m_t = S_t V, the diagonal of S_t = X_t^T X_t / m_t,
// the pseudo-inverse of A_t = Z_t^T Z_t / m_t (tasks with fewer samples than s have a singular
// A_t) and u_t = Kt_t A_t^+. The buffers are reused from task to task (no allocation once
// they have grown to the largest task).
struct NewtonTaskTerms {
    // X_t V when not given; [Z_t r_t] / m_t (m_t x (s + 1), row-major); Z_t^T (s x m_t).
    std::vector<double> Z, C, Zt;
    Matrix KtG;  // [Kt_t g_t] (d x (s + 1))
    Vector squares;
    Matrix A, Ainv, u;
    std::vector<double> L, L_inv;  // row-major s x s (small_cholesky.hpp)

    auto Kt() const { return KtG.leftCols(KtG.cols() - 1); }
    auto g() const { return KtG.col(KtG.cols() - 1); }
};

// Z: the task's rows of X V (m_t x s, row-major), or null to compute them. X is read in place
// (float or double), in one pass from memory (the column groups after the first find X_t in
// cache).
void newton_task_terms(const TasksView& tasks, Index t, const Matrix& V, const double* w,
                       NewtonTaskTerms& out, const double* Z = nullptr) {
    const Index m = tasks.size(t), d = V.rows(), s = V.cols(), begin = tasks.begin(t);
    const Index pitch = tasks.X.pitch(), n = s + 1;
    const double inv_m = 1.0 / double(m);
    if (Z == nullptr) {
        out.Z.resize(static_cast<size_t>(m * s));
        tasks.X.visit([&](const auto* X) {
            project_rows(X + begin * pitch, pitch, m, d, V.data(), d, s, out.Z.data());
        });
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
        out.Ainv.noalias() = eig.eigenvectors() * inv_lambda.asDiagonal() * eig.eigenvectors().transpose();
    }
    out.u.resize(d, s);
    // u = Kt A^+ = (Kt^T)^T A^+: the rows of Kt^T are Kt's columns, A^+ is symmetric.
    transposed_rows(out.KtG.data(), d, s, d, out.Ainv.data(), s, out.u.data());
}

// Dense normal equations of a basis step, accumulated over a fixed number of task chunks.
// als: the exact least squares of the basis for fixed heads, U = argmin sum_t ||y_t - X_t U
// w_t||^2 / m_t. newton (V: d x s orthonormal, W: the exact least-squares heads in span(V)):
// the Newton system for the correction D of the basis V, in (heads, basis) jointly with the
// head increments eliminated task by task (a Schur complement). Blocks (a, b):
// w_a w_b (S_t - K_t^T A_t^+ K_t) + w_a u_b g_t^T + w_b g_t u_a^T - (A_t^+)_ab g_t g_t^T, with
// Z_t = X_t V, A_t = Z_t^T Z_t / m_t, K_t = Z_t^T X_t / m_t, u = K_t^T A_t^+ and g_t =
// X_t^T r_t / m_t; the first term alone is Gauss-Newton. Directions D = V G change nothing
// (the heads absorb them): a penalty on V^T D pins them to 0.
// Polls `stop` task by task (the system of a large d s takes seconds): when it is set, the
// system is incomplete and the caller abandons it.
NormalSystem assemble_basis_system(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                                   const Matrix* V, BasisStep kind, int n_threads,
                                   const StopRequested& stop = {}) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = W.cols(), n = d * s;
    const Index n_chunks = normal_chunks(T, n);
    std::vector<Matrix> normal(static_cast<size_t>(n_chunks));
    std::vector<Vector> rhs(static_cast<size_t>(n_chunks));
    const double work = double(tasks.n_samples()) * d * d + double(T) * s * s * d * d;
    const bool parallel = run_parallel(n_threads, work);
#pragma omp parallel for num_threads(thread_cap(n_threads)) if (parallel) schedule(static)
    for (Index c = 0; c < n_chunks; ++c) {
        Matrix& M = normal[c];
        Vector& r = rhs[c];
        M.setZero(n, n);
        r.setZero(n);
        Matrix gram(d, d), full(d, d);
        Vector xty(d);  // X_t^T y_t / m_t (als), g_t (newton)
        NewtonTaskTerms terms;
        RowMatrix scratch;
        for (Index t = chunk_begin(c, n_chunks, T); t < chunk_begin(c + 1, n_chunks, T); ++t) {
            if (stop && stop()) break;
            const Index m = tasks.size(t);
            const double inv_m = 1.0 / double(m);
            const auto Xt = tasks.task_rows(t, scratch);
            const auto yt = tasks.y.segment(tasks.begin(t), m);
            gram.setZero();
            gram.selfadjointView<Eigen::Lower>().rankUpdate(Xt.transpose(), inv_m);
            if (kind == BasisStep::als) {
                xty.noalias() = inv_m * (Xt.transpose() * yt);
            } else {
                newton_task_terms(tasks, t, *V, W.row(t).data(), terms);
                xty = terms.g();
                gram.noalias() -= terms.u * terms.Kt().transpose();  // symmetric: K^T A^+ K
            }
            const Vector& g = xty;
            const Matrix &u = terms.u, &Ainv = terms.Ainv;
            full = gram.selfadjointView<Eigen::Lower>();
            for (Index a = 0; a < s; ++a) {
                r.segment(a * d, d) += W(t, a) * xty;
                // Blocks (a, b), a >= b: the lower triangle that Cholesky reads.
                for (Index b = 0; b <= a; ++b) {
                    auto block = M.block(a * d, b * d, d, d);
                    block += (W(t, a) * W(t, b)) * full;
                    if (kind == BasisStep::newton) {
                        block.noalias() += W(t, a) * u.col(b) * g.transpose();
                        block.noalias() += W(t, b) * g * u.col(a).transpose();
                        block.noalias() -= Ainv(a, b) * g * g.transpose();
                    }
                }
            }
        }
    }
    for (Index c = 1; c < n_chunks; ++c) {
        normal[0].triangularView<Eigen::Lower>() += normal[c];
        rhs[0] += rhs[c];
    }
    NormalSystem out{std::move(normal[0]), std::move(rhs[0]), 0.0};
    out.scale = std::max(out.M.diagonal().mean(), std::numeric_limits<double>::min());
    if (V != nullptr) {  // penalty scale * (I_s kron V V^T)
        const Matrix VVt = out.scale * (*V) * V->transpose();
        for (Index a = 0; a < s; ++a) out.M.block(a * d, a * d, d, d) += VVt;
    }
    return out;
}

// Solves (M + shift I) x = rhs by Cholesky, as a d x s matrix; empty when not positive
// definite and `definite` is required, else a least-squares solution by LDLT.
Matrix solve_basis_system(const NormalSystem& system, Index d, Index s, double shift, bool definite) {
    Matrix M = system.M;
    M.diagonal().array() += shift;
    Vector solution;
    const Eigen::LLT<Matrix> llt(M);
    if (llt.info() == Eigen::Success) {
        solution = llt.solve(system.rhs);
    } else if (definite) {
        return Matrix();
    } else {  // singular heads (e.g. a zero column of W): any least-squares solution will do
        const Eigen::LDLT<Matrix> ldlt(M.selfadjointView<Eigen::Lower>());
        solution = ldlt.solve(system.rhs);
    }
    return Eigen::Map<const Matrix>(solution.data(), d, s);
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

// The Newton system of assemble_basis_system (BasisStep::newton) as an operator: D (d x s) ->
// sum_t [(q_t + u_t (h_t - k_t)) w_t^T + g_t (A_t^+ (k_t - h_t))^T] + scale V V^T D, with
// v_t = D w_t, h_t = D^T g_t, q_t = S_t v_t and k_t = V^T S_t v_t; since u_t = S_t V A_t^+,
// the first two terms are X_t^T (X_t v_t - Z_t c_t) / m_t with c_t = A_t^+ (k_t - h_t), so
// one product costs two passes over X (about one hard-thresholding iteration) instead of the
// T s^2 d^2 work of forming the matrix.
class NewtonOperator {
public:
    // Z: X V (N x s).
    NewtonOperator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W, const Matrix& V,
                   RowMatrix Z, int n_threads)
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

    const Matrix& rhs() const { return rhs_; }
    double scale() const { return scale_; }

    // (Newton matrix + shift I) D.
    Matrix apply(const Matrix& D, double shift) const {
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
        Matrix out = sum_in_order(partial);
        out.noalias() += scale_ * (V_ * (V_.transpose() * D));
        out += shift * D;
        return out;
    }

    // The inverse of the preconditioner diag(data diagonal + shift) + scale V V^T, block by
    // block (Woodbury): it captures the scales of the blocks and of the features, and the
    // penalty's directions, which the data part leaves out.
    Matrix precondition(const Matrix& R, double shift) const {
        const Index s = R.cols();
        Matrix out(R.rows(), s);
        for (Index a = 0; a < s; ++a) {
            const Vector inv = (diagonal_.col(a).array() + shift)
                                   .max(kMinPreconditioner * scale_).inverse().matrix();
            const Matrix DV = inv.asDiagonal() * V_;
            Matrix capacity = V_.transpose() * DV;
            capacity.diagonal().array() += 1.0 / scale_;
            const Vector x = inv.cwiseProduct(R.col(a));
            out.col(a) = x - DV * capacity.llt().solve(V_.transpose() * x);
        }
        return out;
    }

private:
    // Floor of the diagonal preconditioner, relative to scale (the data diagonal of a flat
    // direction may be zero or negative).
    static constexpr double kMinPreconditioner = 1e-6;

    template <class Body>
    void for_chunks(double work_per_sample, Body body) const {
        const Index T = tasks_.n_tasks(), n_chunks = operator_chunks(T);
        const bool parallel = run_parallel(n_threads_, double(tasks_.n_samples()) * work_per_sample);
#pragma omp parallel for num_threads(thread_cap(n_threads_)) if (parallel) schedule(dynamic, 1)
        for (Index c = 0; c < n_chunks; ++c)
            body(c, chunk_begin(c, n_chunks, T), chunk_begin(c + 1, n_chunks, T));
    }

    static Matrix sum_in_order(std::vector<Matrix>& partial) {
        Matrix total = std::move(partial[0]);
        for (size_t c = 1; c < partial.size(); ++c) total += partial[c];
        return total;
    }

    const TasksView& tasks_;
    Eigen::Ref<const RowMatrix> W_;
    const Matrix& V_;
    int n_threads_;
    // X V, task by task transposed (Z_t^T, s x m_t, from row begin_t on); the g_t (T x d);
    // the A_t^+ (T s x s).
    RowMatrix Z_, G_, Ainv_;
    Matrix rhs_, diagonal_;
    double scale_ = 0;
};

enum class CGOutcome { converged, indefinite, unconverged, stopped };

// Preconditioned conjugate gradients on (Newton matrix + shift I) D = rhs from D = 0, until the
// relative residual is below kNewtonCGTol or the preconditioned residual (the estimate of the
// error left in D) is below `floor` or kQuadraticFloor ||D||^2. indefinite: a search direction of non-positive curvature
// (the counterpart of a failed Cholesky); unconverged: max_iter reached.
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
        if (z.norm() <= std::max(floor, kQuadraticFloor * D.squaredNorm())) return CGOutcome::converged;
        const double rz_next = (residual.array() * z.array()).sum();
        direction = z + (rz_next / rz) * direction;
        rz = rz_next;
    }
    return CGOutcome::unconverged;
}

// Applies the normal operator U -> sum_t X_t^T X_t U w_t w_t^T / m_t, never forming it: per-task
// rows q_t = X_t^T X_t (U w_t) / m_t, then Q^T W by the deterministic chunked product.
Matrix normal_operator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                       const Matrix& U, RowMatrix& Q, int n_threads) {
    const Index d = tasks.n_features();
    for_each_task(tasks, n_threads, 2.0 * d, [&](Index t) {
        thread_local Vector theta;
        thread_local RowMatrix scratch;
        theta.noalias() = U * W.row(t).transpose();
        auto q = Q.row(t);
        q.setZero();
        const auto Xt = tasks.task_rows(t, scratch);
        for (Index i = 0; i < Xt.rows(); ++i) {
            const auto x = Xt.row(i);
            q += x.dot(theta) * x;
        }
        q /= double(tasks.size(t));
    });
    return transposed_product(Q, W, n_threads);
}

Matrix cg_basis_solve(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                      const Eigen::Ref<const Matrix>& U0, int n_threads,
                      const BasisSolveOptions& options, const StopRequested& stop) {
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = W.cols();
    RowMatrix Q(T, d);
    Vector loss(T);
    // X_t^T y_t / m_t is the negative gradient at Theta = 0.
    task_gradient(tasks, RowMatrix::Zero(T, d), Q, loss, n_threads);
    const Matrix rhs = transposed_product(Q, W, n_threads);
    Matrix U = U0.size() > 0 ? Matrix(U0) : Matrix::Zero(d, s);
    Matrix residual = rhs - normal_operator(tasks, W, U, Q, n_threads);
    Matrix direction = residual;
    double rr = residual.squaredNorm();
    const double target = options.cg_tol * options.cg_tol * rhs.squaredNorm();
    for (int k = 0; k < options.cg_max_iter && rr > target && !(stop && stop()); ++k) {
        const Matrix applied = normal_operator(tasks, W, direction, Q, n_threads);
        const double curvature = (direction.array() * applied.array()).sum();
        if (!(curvature > 0)) break;
        const double alpha = rr / curvature;
        U += alpha * direction;
        residual -= alpha * applied;
        const double rr_next = residual.squaredNorm();
        direction = residual + (rr_next / rr) * direction;
        rr = rr_next;
    }
    return U;
}

// Damping of the Newton step: attempts per sweep before the ALS step, the factor it grows
// by after a failure (and shrinks by after a success), and its smallest non-zero value.
constexpr int kDampingAttempts = 6;
constexpr double kDampingFactor = 10;
constexpr double kMinDamping = 1e-6;

// Below this relative change, a sweep whose loss did not decrease is rounding at a
// stationary point: converged rather than stalled.
constexpr double kStationaryChange = 1e-6;

// The loss has stagnated when the last kStagnationWindow sweeps together lowered it by less
// than kLossStagnation of its value: a flat valley (a direction the data barely identify)
// where the iterate creeps for many sweeps while the fit no longer improves measurably.
constexpr int kStagnationWindow = 10;
constexpr double kLossStagnation = 1e-5;

// ||next - theta||_F / ||next||_F for next = W V^T of the factors (written into next).
double relative_change(const Factors& factors, const RowMatrix& theta, RowMatrix& next, int n_threads) {
    tall_product(factors.W, factors.V.transpose(), next, n_threads);
    const double norm = next.norm(), change = (next - theta).norm();
    return norm > 0 ? change / norm : 0.0;
}

}  // namespace

Factors canonical_factors(const Eigen::Ref<const RowMatrix>& W, const Eigen::Ref<const Matrix>& U) {
    const Index s = W.cols();
    if (U.cols() != s) throw std::invalid_argument("W and U must have the same number of columns");
    const Eigen::HouseholderQR<Matrix> qr_u(U);
    const Matrix Q = qr_u.householderQ() * Matrix::Identity(U.rows(), s);
    const Matrix R = qr_u.matrixQR().topRows(s).triangularView<Eigen::Upper>();
    const Matrix heads = W * R.transpose();  // Theta = heads Q^T
    // SVD of the T x s heads through a thin QR: heads = Q2 R2, R2 = P S Z^T.
    const Eigen::HouseholderQR<Matrix> qr_w(heads);
    const Matrix R2 = qr_w.matrixQR().topRows(s).triangularView<Eigen::Upper>();
    const Eigen::JacobiSVD<Matrix> svd(R2, Eigen::ComputeFullV);
    Factors out;
    out.V = Q * svd.matrixV();
    out.W = heads * svd.matrixV();
    out.singular_values = svd.singularValues();
    return out;
}

void task_heads(const TasksView& tasks, const Eigen::Ref<const Matrix>& V, Eigen::Ref<RowMatrix> W,
                Eigen::Ref<Vector> task_loss, int n_threads, RowMatrix* Z_out) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index T = tasks.n_tasks(), s = V.cols();
    if (V.rows() != tasks.n_features()) throw std::invalid_argument("V must have d rows");
    if (W.rows() != T || W.cols() != s) throw std::invalid_argument("W must have shape (T, s)");
    if (task_loss.size() != T) throw std::invalid_argument("task_loss needs one entry per task");
    if (Z_out != nullptr) Z_out->resize(tasks.n_samples(), s);
    const Index d = V.rows(), pitch = tasks.X.pitch();
    for_each_task(tasks, n_threads, 2.0 * d * s, [&](Index t) {
        const Index m = tasks.size(t), begin = tasks.begin(t);
        thread_local std::vector<double> Z_local, Zt, work;
        double* Z = Z_out != nullptr ? Z_out->data() + begin * s : nullptr;
        if (Z == nullptr) {
            Z_local.resize(static_cast<size_t>(m * s));
            Z = Z_local.data();
        }
        tasks.X.visit([&](const auto* X) {
            project_rows(X + begin * pitch, pitch, m, d, V.data(), V.outerStride(), s, Z);
        });
        const double* y = tasks.y.data() + begin;
        work.resize(static_cast<size_t>(3 * s * s + 3 * s));
        double *A = work.data(), *L = A + s * s, *L_inv = L + s * s, *b = L_inv + s * s,
               *c = b + s, *w = c + s;
        Zt.resize(static_cast<size_t>(m * s));
        scaled_gram(Z, m, s, 1.0, y, A, b, Zt.data());
        if (well_conditioned_cholesky(A, s, kHeadsCondition, L, L_inv)) {
            for (Index i = 0; i < s; ++i) {  // c = L^-1 b, w = L^-T c
                double sum = 0;
                for (Index k = 0; k <= i; ++k) sum += L_inv[i * s + k] * b[k];
                c[i] = sum;
            }
            for (Index a = 0; a < s; ++a) {
                double sum = 0;
                for (Index i = a; i < s; ++i) sum += L_inv[i * s + a] * c[i];
                w[a] = sum;
            }
        } else {  // ill-conditioned or rank deficient: the minimum-norm least-squares solution
            const Eigen::Map<const RowMatrix> Zt(Z, m, s);
            const Eigen::CompleteOrthogonalDecomposition<Matrix> cod(Zt);
            Eigen::Map<Vector>(w, s) = cod.solve(Eigen::Map<const Vector>(y, m));
        }
        double loss = 0;
        for (Index i = 0; i < m; ++i) {
            double r = y[i];
            for (Index k = 0; k < s; ++k) r -= Z[i * s + k] * w[k];
            loss += r * r;
        }
        for (Index k = 0; k < s; ++k) W(t, k) = w[k];
        task_loss[t] = loss / double(m);
    });
}

Matrix basis_least_squares(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                           const Eigen::Ref<const Matrix>& U0, int n_threads,
                           const BasisSolveOptions& options, const StopRequested& stop) {
    check_tasks(tasks);
    check_threads(n_threads);
    const Index d = tasks.n_features(), s = W.cols();
    if (W.rows() != tasks.n_tasks() || s < 1) throw std::invalid_argument("W must have shape (T, s)");
    if (U0.size() > 0 && (U0.rows() != d || U0.cols() != s))
        throw std::invalid_argument("U0 must have shape (d, s)");
    if (d * s <= options.max_dense) {
        NormalSystem system = assemble_basis_system(tasks, W, nullptr, BasisStep::als, n_threads, stop);
        if (stop && stop()) return Matrix::Zero(d, s);
        return solve_basis_system(system, d, s, 0.0, false);
    }
    return cg_basis_solve(tasks, W, U0, n_threads, options, stop);
}

RefineResult refine(const TasksView& tasks, const Eigen::Ref<const Matrix>& V0,
                    const RefineOptions& options, const StopRequested& stop_requested) {
    check_tasks(tasks);
    check_threads(options.n_threads);
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V0.cols();
    if (V0.rows() != d || s < 1 || s > std::min(T, d))
        throw std::invalid_argument("the starting basis must have shape (d, s), 1 <= s <= min(T, d)");
    if (options.max_iter < 0) throw std::invalid_argument("max_iter must be non-negative");
    const auto& ref = options.reference_B;
    if (ref.size() > 0 && (ref.rows() != s || ref.cols() != d))
        throw std::invalid_argument("reference_B must have shape (s, d)");
    const int n_threads = options.n_threads;

    RefineResult out;
    RowMatrix W(T, s);
    Vector per_task(T);
    const Eigen::HouseholderQR<Matrix> qr(V0);
    const Matrix V = qr.householderQ() * Matrix::Identity(d, s);  // orthonormal basis of span(V0)
    // X V for the basis of the last heads (kept: the Newton operator needs X V for the rotated
    // basis of the next sweep, Z_heads (V_heads^T V)), and for the heads being tried.
    RowMatrix Z_heads, Z_step;
    Matrix V_heads = V, V_step;
    task_heads(tasks, V, W, per_task, n_threads, &Z_heads);
    Factors current = canonical_factors(W, V);
    out.start_loss = mean(per_task);
    RowMatrix theta(T, d), next(T, d);
    tall_product(current.W, current.V.transpose(), theta, n_threads);
    double loss = out.start_loss;
    double damping = 0;  // of the Newton step, relative to the mean diagonal of its matrix
    out.status = RefineStatus::max_iter;

    const auto stop = [&] { return stop_requested && stop_requested(); };
    for (int k = 0; k < options.max_iter; ++k) {
        if (stop()) { out.status = RefineStatus::interrupted; break; }
        const Clock::time_point started = Clock::now();
        double next_loss = loss;
        Factors candidate;
        bool accepted = false;
        if (options.newton && d * s <= options.basis.max_dense) {
            // Damped Newton (Levenberg-Marquardt on the Newton system): basis V + D with the
            // heads re-fitted exactly, kept only if it lowers the loss; the damping shrinks
            // after a success and grows after a failure (flat, curved valleys need it).
            // Solved matrix-free by conjugate gradients when the work estimate favours it, else
            // (or when that does not converge) from the dense system.
            const int cg_budget = newton_cg_budget(tasks, s, options.basis.newton_solve);
            std::optional<NewtonOperator> op;
            std::optional<NormalSystem> system;
            if (cg_budget > 0) {
                RowMatrix Z(tasks.n_samples(), s);
                tall_product(Z_heads, Matrix(V_heads.transpose() * current.V), Z, n_threads);
                op.emplace(tasks, current.W, current.V, std::move(Z), n_threads);
            } else {
                system = assemble_basis_system(tasks, current.W, &current.V, BasisStep::newton,
                                               n_threads, stop_requested);
            }
            // Every attempt may take seconds for a large d s: each polls first.
            for (int attempt = 0; attempt < kDampingAttempts && !accepted && !stop(); ++attempt) {
                Matrix D;
                if (op) {
                    const double shift = damping * op->scale();
                    const CGOutcome outcome = newton_cg(*op, shift, cg_budget, kStepFloor * options.tol, D,
                                                        stop_requested);
                    if (outcome == CGOutcome::stopped) break;
                    if (outcome == CGOutcome::indefinite) D.resize(0, 0);
                    if (outcome == CGOutcome::unconverged) {
                        op.reset();
                        system = assemble_basis_system(tasks, current.W, &current.V, BasisStep::newton,
                                                       n_threads, stop_requested);
                        if (stop()) break;
                    }
                }
                if (system) D = solve_basis_system(*system, d, s, damping * system->scale, true);
                if (D.size() > 0) {
                    const Eigen::HouseholderQR<Matrix> qr_step(current.V + D);
                    V_step = qr_step.householderQ() * Matrix::Identity(d, s);
                    task_heads(tasks, V_step, W, per_task, n_threads, &Z_step);
                    next_loss = mean(per_task);
                    candidate = canonical_factors(W, V_step);
                    // A step within tol of the iterate is the converged one: whether its loss
                    // is lower is rounding, and damping it further would only repeat it.
                    if (next_loss < loss || relative_change(candidate, theta, next, n_threads) <= options.tol) {
                        accepted = true;
                        ++out.n_newton;
                        damping = damping / kDampingFactor < kMinDamping ? 0.0 : damping / kDampingFactor;
                        break;
                    }
                }
                damping = std::max(damping * kDampingFactor, kMinDamping);
            }
        }
        if (stop()) { out.status = RefineStatus::interrupted; break; }
        if (!accepted) {  // the exact least-squares step of the basis for fixed heads (ALS)
            const Matrix U = basis_least_squares(tasks, current.W, current.V, n_threads, options.basis,
                                                 stop_requested);
            if (stop()) { out.status = RefineStatus::interrupted; break; }
            const Factors rotated = canonical_factors(current.W, U);
            V_step = rotated.V;
            task_heads(tasks, V_step, W, per_task, n_threads, &Z_step);
            next_loss = mean(per_task);
            candidate = canonical_factors(W, rotated.V);
        }
        const double rel_change = relative_change(candidate, theta, next, n_threads);
        if (!(next_loss < loss) && !(rel_change <= options.tol)) {
            // Exact half-steps cannot increase the loss: this is rounding (or an inexact
            // iterative solve), so keep the better iterate we have.
            out.status = rel_change <= kStationaryChange ? RefineStatus::converged : RefineStatus::stalled;
            break;
        }
        current = std::move(candidate);
        std::swap(Z_heads, Z_step);
        std::swap(V_heads, V_step);
        std::swap(theta, next);
        loss = next_loss;
        out.n_iter = k + 1;
        out.loss.push_back(loss);
        out.rel_change.push_back(rel_change);
        if (ref.size() > 0) out.sin_angle.push_back(sin_angle(current.V, ref));
        out.seconds.push_back(seconds_since(started));
        if (rel_change <= options.tol) { out.status = RefineStatus::converged; break; }
        if (options.sin_tol > 0 && ref.size() > 0 && out.sin_angle.back() <= options.sin_tol) {
            out.status = RefineStatus::converged;
            break;
        }
        const auto n = out.loss.size();
        if (options.tol > 0 && n > size_t(kStagnationWindow) &&
            out.loss[n - 1 - kStagnationWindow] - loss <= kLossStagnation * loss) {
            out.status = RefineStatus::stalled;
            break;
        }
    }
    out.factors = std::move(current);
    out.Theta = std::move(theta);
    return out;
}

}  // namespace metasp
