// Per-task passes over the stacked data: the fused gradient/loss pass and the curvature pass.
// Tasks are independent, so the result does not depend on the thread count.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

// For every task t, with r_t = y_t - X_t theta_t and m_t its number of samples:
//   G[t] = X_t^T r_t / m_t  (the negative gradient of ||r_t||^2 / (2 m_t)),
//   task_loss[t] = ||r_t||^2 / m_t.
// Reads each row of X once. Theta and G are (T, d); task_loss is (T,).
void task_gradient(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                   Eigen::Ref<RowMatrix> G, Eigen::Ref<Vector> task_loss, int n_threads);

// The same pass, plus the two sums of the normalized IHT step along the gradient projected on
// span(V) (V: d x s, orthonormal columns), computed while X_t is still in cache so that X is
// read from memory once: with p_t = V V^T G[t],
//   projected[t] = ||p_t||^2 and curvature[t] = ||X_t p_t||^2 / m_t.
void task_gradient(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                   Eigen::Ref<RowMatrix> G, Eigen::Ref<Vector> task_loss, int n_threads,
                   const Eigen::Ref<const Matrix>& V, Eigen::Ref<Vector> projected,
                   Eigen::Ref<Vector> curvature);

// The pass of conjugate-direction IHT (CGIHT): the gradient and loss as above, and with
// a_t = V V^T G[t] and q_t = V V^T D[t] (the gradient and the previous direction D projected
// on span(V), V: d x s orthonormal), their coefficients CG[t] = V^T G[t] and CD[t] = V^T D[t]
// (T x s) and the curvatures along them and their cross term:
//   aa[t] = ||X_t a_t||^2 / m_t,  ad[t] = <X_t a_t, X_t q_t> / m_t,  dd[t] = ||X_t q_t||^2 / m_t.
// X_t q_t is computed alongside X_t theta_t and X_t a_t while X_t is in cache: X is read from
// memory once.
void task_gradient_conjugate(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
                             const Eigen::Ref<const RowMatrix>& D, Eigen::Ref<RowMatrix> G,
                             Eigen::Ref<Vector> task_loss, const Eigen::Ref<const Matrix>& V,
                             Eigen::Ref<RowMatrix> CG, Eigen::Ref<RowMatrix> CD,
                             Eigen::Ref<Vector> aa, Eigen::Ref<Vector> ad, Eigen::Ref<Vector> dd,
                             int n_threads);

// task_loss[t] = ||y_t - X_t theta_t||^2 / m_t, without the gradient.
void task_loss(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& Theta,
               Eigen::Ref<Vector> task_loss, int n_threads);

// Curvature of the loss along the direction D = C B^T, row t: d_t = B c_t with C (T, r) and
// B (d, r), never formed as a T x d matrix: task_curvature[t] = ||X_t d_t||^2 / m_t.
void task_curvature(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& C,
                    const Eigen::Ref<const Matrix>& B, Eigen::Ref<Vector> task_curvature,
                    int n_threads);

// The same along a direction D (T, d) given row by row: task_curvature[t] = ||X_t d_t||^2 / m_t.
void task_curvature(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& D,
                    Eigen::Ref<Vector> task_curvature, int n_threads);

}  // namespace metasp
