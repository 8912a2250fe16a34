// The Newton step of the polish: the Newton system for a correction of the basis, with the
// heads eliminated task by task, as per-task terms (for the dense system of basis_system.hpp)
// and as a matrix-free operator solved by preconditioned conjugate gradients.
#pragma once

#include "metasp/types.hpp"

#include <vector>

namespace metasp {

// How the Newton step's system is solved: formed densely and factorised, or by preconditioned
// conjugate gradients on the matrix-free operator (two passes over X per product);
// automatic: conjugate gradients when forming the dense system costs more than kMinNewtonCG
// products, with the dense solve as the fallback when they do not converge.
enum class NewtonSolve { automatic, dense, iterative };

// The conjugate-gradient Newton solve also stops once the error left in the step D is below
// this fraction of the polish's tol: V is orthonormal and ||Theta|| = ||W|| in canonical form,
// so it moves Theta by less than kStepFloor tol relative, far below what the stopping rule can
// see (this saves most of the iterations of the last, confirming sweep).
constexpr double kStepFloor = 1e-3;

// Relative residual at which the conjugate-gradient Newton solve stops: an inexact Newton step
// with this forcing term still converges superlinearly, to the same stationary point.
constexpr double kNewtonCGTol = 1e-6;
// ... or once the error left in the step D is below this factor times ||D||^2 (or below the
// caller's floor, see kStepFloor): the Newton step itself leaves an error of order ||D||^2
// (quadratic convergence), so solving more exactly gains nothing.
constexpr double kQuadraticFloor = 0.1;
// Fewest iterations the work estimate must allow before the iterative Newton solve is tried.
constexpr int kMinNewtonCG = 20;

// Floor of the diagonal preconditioner, relative to scale (the data diagonal of a flat
// direction may be zero or negative).
constexpr double kMinPreconditioner = 1e-6;

// Most preconditioned conjugate-gradient iterations a Newton solve may take (0: solve densely).
int newton_cg_budget(const TasksView& tasks, Index s, NewtonSolve how);

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

// The terms of task t for V (d x s, orthonormal) and its head w (s). Z: the task's rows of
// X V (m_t x s, row-major), or null to compute them.
void newton_task_terms(const TasksView& tasks, Index t, const Matrix& V, const double* w,
                       NewtonTaskTerms& out, const double* Z = nullptr);

// The Newton system of assemble_basis_system (BasisStep::newton) as an operator: D (d x s) ->
// sum_t [(q_t + u_t (h_t - k_t)) w_t^T + g_t (A_t^+ (k_t - h_t))^T] + scale V V^T D, with
// v_t = D w_t, h_t = D^T g_t, q_t = S_t v_t and k_t = V^T S_t v_t; since u_t = S_t V A_t^+,
// the first two terms are X_t^T (X_t v_t - Z_t c_t) / m_t with c_t = A_t^+ (k_t - h_t), so
// one product costs two passes over X (about one hard-thresholding iteration) instead of the
// T s^2 d^2 work of forming the matrix. Keeps references to tasks, W and V: they must outlive it.
class NewtonOperator {
public:
    // Z: X V (N x s).
    NewtonOperator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W, const Matrix& V,
                   RowMatrix Z, int n_threads);
    // Computes X V itself (one more pass over X).
    NewtonOperator(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& W, const Matrix& V,
                   int n_threads);

    const Matrix& rhs() const { return rhs_; }
    // The diagonal of the tasks' terms (d x s), without the gauge penalty.
    const Matrix& data_diagonal() const { return diagonal_; }
    double scale() const { return scale_; }

    // (Newton matrix + shift I) D.
    Matrix apply(const Matrix& D, double shift) const;

    // The tasks' terms of the Newton matrix times D, without the gauge penalty and the shift:
    // what adds up over disjoint sets of tasks (rhs and data_diagonal do too).
    Matrix apply_tasks(const Matrix& D) const;

    // The inverse of the preconditioner diag(data diagonal + shift) + scale V V^T, block by
    // block (Woodbury): it captures the scales of the blocks and of the features, and the
    // penalty's directions, which the data part leaves out.
    Matrix precondition(const Matrix& R, double shift) const;

private:
    // body(c, t0, t1) over the fixed task chunks of operator_chunks.
    template <class Body>
    void for_chunks(double work_per_sample, Body body) const;

    static Matrix sum_in_order(std::vector<Matrix>& partial);

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
// relative residual is small or the preconditioned residual (the estimate of the error left
// in D) is below `floor` or a fraction of ||D||^2. indefinite: a search direction of
// non-positive curvature (the counterpart of a failed Cholesky); unconverged: max_iter reached.
// Polls `stop` before every operator product.
CGOutcome newton_cg(const NewtonOperator& op, double shift, int max_iter, double floor, Matrix& D,
                    const StopRequested& stop);

}  // namespace metasp
