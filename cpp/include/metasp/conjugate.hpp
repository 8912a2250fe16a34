// The extra pass of conjugate-direction IHT (CGIHT): curvatures of the loss along two
// directions and their cross term, from one read of X.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

// For directions A and D (T, d), given row by row, and every task t:
//   aa[t] = ||X_t a_t||^2 / m_t,  ad[t] = <X_t a_t, X_t d_t> / m_t,  dd[t] = ||X_t d_t||^2 / m_t.
void task_curvature_pair(const TasksView& tasks, const Eigen::Ref<const RowMatrix>& A,
                         const Eigen::Ref<const RowMatrix>& D, Eigen::Ref<Vector> aa,
                         Eigen::Ref<Vector> ad, Eigen::Ref<Vector> dd, int n_threads);

}  // namespace metasp
