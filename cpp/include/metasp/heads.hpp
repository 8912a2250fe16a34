// The heads step of the polish: per-task least-squares heads in a given subspace, and the
// canonical form of the rank-s factors Theta = W V^T.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

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
void task_heads(const TasksView& tasks, const Eigen::Ref<const Matrix>& V, Eigen::Ref<RowMatrix> W,
                Eigen::Ref<Vector> task_loss, int n_threads, RowMatrix* Z_out = nullptr);

}  // namespace metasp
