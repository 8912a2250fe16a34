// The basis step of the polish: the least-squares basis U for fixed heads, from dense normal
// equations (also the dense form of the Newton system) or matrix-free conjugate gradients.
#pragma once

#include "metasp/newton.hpp"
#include "metasp/types.hpp"

namespace metasp {

// Above this many unknowns (d * s) the basis step solves its normal equations by conjugate
// gradients instead of forming and factorising the (d s) x (d s) matrix.
constexpr Index kMaxDenseNormal = 2000;

struct BasisSolveOptions {
    Index max_dense = kMaxDenseNormal;  // d * s above which conjugate gradients are used
    double cg_tol = 1e-13;              // relative residual of the conjugate-gradient solve
    int cg_max_iter = 1000;
    NewtonSolve newton_solve = NewtonSolve::automatic;
};

// The dense normal equations of a basis step.
struct NormalSystem {
    Matrix M;  // lower triangle: sum over tasks, plus the gauge penalty for newton
    Vector rhs;
    double scale;  // mean diagonal entry: the unit of the damping shift
};

enum class BasisStep { als, newton };

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
                                   const StopRequested& stop = {});

// The sums over tasks of assemble_basis_system without the gauge penalty (M: lower triangle;
// scale: its mean diagonal entry): what adds up over disjoint sets of tasks. Every task term
// is the same as assemble_basis_system's.
NormalSystem basis_system_sums(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                               const Matrix* V, BasisStep kind, int n_threads,
                               const StopRequested& stop = {});

// Adds the penalty scale * (I_s kron V V^T) that pins the directions D = V G of a Newton
// system to 0 (the heads absorb them).
void add_gauge_penalty(NormalSystem& system, const Matrix& V);

// Solves (M + shift I) x = rhs by Cholesky, as a d x s matrix; empty when not positive
// definite and `definite` is required, else a least-squares solution by LDLT.
Matrix solve_basis_system(const NormalSystem& system, Index d, Index s, double shift,
                          bool definite);

// The basis step: U = argmin_U sum_t ||y_t - X_t U w_t||^2 / m_t for fixed heads W (T x s),
// from the normal equations sum_t (w_t w_t^T kron X_t^T X_t / m_t) vec(U) = vec(sum_t X_t^T y_t
// w_t^T / m_t). Dense: accumulated over a fixed number of task chunks (so the result does not
// depend on the thread count) and solved by Cholesky. Large: conjugate gradients started from
// U0 (d x s, may be empty). Returns U (d x s), incomplete when `stop` answered true.
Matrix basis_least_squares(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W,
                           const Eigen::Ref<const Matrix>& U0, int n_threads,
                           const BasisSolveOptions& options = {}, const StopRequested& stop = {});

}  // namespace metasp
