// Per-task sufficient statistics of the regressions restricted to a subspace: what the head
// prior, the posterior heads and the diagnostics need after a fit, from one read of X.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

// For every task t, with Z_t = X_t V (m_t x s; V: d x s, any columns):
//   gram row t = Z_t^T Z_t (s x s, stored row-major in the s*s entries of the row),
//   cross row t = Z_t^T y_t,  squares[t] = y_t^T y_t.
// gram is (T, s*s), cross (T, s), squares (T,). Tasks are independent, so the results do not
// depend on the thread count.
void task_statistics(const TasksView& tasks, const Eigen::Ref<const Matrix>& V,
                     Eigen::Ref<RowMatrix> gram, Eigen::Ref<RowMatrix> cross,
                     Eigen::Ref<Vector> squares, int n_threads);

// Throws std::invalid_argument unless V (rows x s) has shape (d, s) with 1 <= s <= d.
void check_subspace_shape(const TasksView& tasks, Index rows, Index s);

// The same pass, plus the negative gradient at theta_t = V w_t (W: T x s) while each row is in
// cache: G[t] = X_t^T r_t / m_t with r_t = y_t - Z_t w_t (G: T x d).
void task_statistics(const TasksView& tasks, const Eigen::Ref<const Matrix>& V,
                     Eigen::Ref<RowMatrix> gram, Eigen::Ref<RowMatrix> cross,
                     Eigen::Ref<Vector> squares, int n_threads,
                     const Eigen::Ref<const RowMatrix>& W, Eigen::Ref<RowMatrix> G);

}  // namespace metasp
