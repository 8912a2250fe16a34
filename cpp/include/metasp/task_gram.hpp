// Per-task products of the polish, shared by its heads step (heads.cpp) and its Newton step
// (newton.cpp): Z_t = X_t V and the small Gram matrix Z_t^T Z_t.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

// Z = X_t V (m_t x s, row-major) for task t and V (d x s, column-major with column pitch
// ldv). X is read in place, float or double.
void project_task_rows(const TasksView& tasks, Index t, const double* V, Index ldv, Index s,
                       double* Z);

// G = Z^T Z * scale (s x s, column-major, both triangles) and, when y is given, b = Z^T y,
// for Z (m x s, row-major): through Zt = Z^T (s x m, the caller's buffer), so that every entry
// is a dot product along the samples on the packed kernels rather than a chain of m
// dependent multiply-adds.
void scaled_gram(const double* Z, Index m, Index s, double scale, const double* y, double* G,
                 double* b, double* Zt);

// L with A = L L^T and L_inv = L^-1 (s x s, row-major, lower triangles; small_cholesky.hpp)
// for the symmetric A. True when A is positive definite and cond(A) provably below
// max_condition: lambda_max <= trace(A), lambda_min >= 1 / ||L^-1||_F^2.
bool well_conditioned_cholesky(const double* A, Index s, double max_condition, double* L,
                               double* L_inv);

}  // namespace metasp
