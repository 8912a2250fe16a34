// Pursuit polish: alternating exact least squares on Theta = W U^T once hard thresholding has
// found the basin. Each half-step solves its least-squares problem exactly, so the loss never
// increases; near the information limit this converges where IHT alone crawls.
#pragma once

#include "metasp/types.hpp"

#include <vector>

namespace metasp {

// Above this many unknowns (d * s) the basis step solves its normal equations by conjugate
// gradients instead of forming and factorising the (d s) x (d s) matrix.
constexpr Index kMaxDenseNormal = 2000;

// Rank-s factors in canonical form: Theta = W V^T, V (d x s) orthonormal, W = U diag(sv),
// columns ordered by decreasing singular value.
struct Factors {
    RowMatrix W;             // (T, s)
    Matrix V;                // (d, s)
    Vector singular_values;  // (s,)
};

// Canonical factors of W U^T for any W (T x s) and U (d x s): thin QR of U, then an SVD of
// the small T x s product.
Factors canonical_factors(const Eigen::Ref<const RowMatrix>& W, const Eigen::Ref<const Matrix>& U);

// Per-task least-squares heads in span(V) (V: d x s, any full-rank basis):
// W[t] = argmin_w ||y_t - X_t V w||^2, the minimum-norm solution when X_t V is rank deficient
// (fewer samples than s). Writes task_loss[t] = ||y_t - X_t V W[t]||^2 / m_t, and X V (N x s)
// into Z_out when given.
void task_heads(const TasksView& tasks, const Eigen::Ref<const Matrix>& V,
                Eigen::Ref<RowMatrix> W, Eigen::Ref<Vector> task_loss, int n_threads,
                RowMatrix* Z_out = nullptr);

// How the Newton step's system is solved: formed densely and factorised, or by preconditioned
// conjugate gradients on the matrix-free operator (two passes over X per product);
// automatic: conjugate gradients when forming the dense system costs more than kMinNewtonCG
// products, with the dense solve as the fallback when they do not converge.
enum class NewtonSolve { automatic, dense, iterative };

struct BasisSolveOptions {
    Index max_dense = kMaxDenseNormal;  // d * s above which conjugate gradients are used
    double cg_tol = 1e-13;              // relative residual of the conjugate-gradient solve
    int cg_max_iter = 1000;
    NewtonSolve newton_solve = NewtonSolve::automatic;
};

// The basis step: U = argmin_U sum_t ||y_t - X_t U w_t||^2 / m_t for fixed heads W (T x s),
// from the normal equations sum_t (w_t w_t^T kron X_t^T X_t / m_t) vec(U) = vec(sum_t X_t^T y_t
// w_t^T / m_t). Dense: accumulated over a fixed number of task chunks (so the result does not
// depend on the thread count) and solved by Cholesky. Large: conjugate gradients started from
// U0 (d x s, may be empty). Returns U (d x s), incomplete when `stop` answered true.
Matrix basis_least_squares(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                           const Eigen::Ref<const Matrix>& U0, int n_threads,
                           const BasisSolveOptions& options = {},
                           const StopRequested& stop = {});

struct RefineOptions {
    int max_iter = 100;  // sweeps (one basis step and one heads step each)
    double tol = 1e-10;  // stop when ||Theta+ - Theta||_F <= tol ||Theta+||_F
    double sin_tol = 0;  // > 0: also stop when the sin angle to reference_B is below it
    int n_threads = 1;
    // Try damped Newton steps of the basis first (heads eliminated jointly, then re-fitted
    // exactly); fall back to the ALS basis step when none lowers the loss. Dense normal
    // equations only (d * s <= basis.max_dense).
    bool newton = true;
    RowMatrix reference_B;  // (s, d) or empty
    BasisSolveOptions basis;
};

enum class RefineStatus { converged, max_iter, stalled, interrupted };

struct RefineResult {
    Factors factors;
    RowMatrix Theta;
    double start_loss = 0;  // loss of the heads fitted in the starting subspace
    // One entry per sweep: loss (mean over tasks of ||r_t||^2 / m_t), relative change, sin
    // angle, wall-clock seconds.
    std::vector<double> loss, rel_change, sin_angle, seconds;
    int n_iter = 0;
    int n_newton = 0;  // sweeps whose basis step was a Newton one (the rest: ALS)
    RefineStatus status = RefineStatus::max_iter;
};

// Alternating least squares from the subspace spanned by V0 (d x s): heads, then
// (basis, heads) sweeps, each basis step damped Newton when that lowers the loss, until the relative change is below tol or the loss stops decreasing
// (then the better of the last two iterates is returned).
RefineResult refine(const TasksView& tasks, const Eigen::Ref<const Matrix>& V0,
                    const RefineOptions& options, const StopRequested& stop_requested = {});

}  // namespace metasp
