// Cholesky factors of the tiny symmetric positive definite matrices of the per-task solves
// (s x s, s ~ 5), in plain loops on the caller's row-major buffers: Eigen's dynamic-size LLT
// costs more to set up than these factorisations do. With S > 0, s is fixed at compile time
// and the loops unroll.
#pragma once

#include "metasp/types.hpp"

#include <cmath>

namespace metasp {

// L with A = L L^T (lower triangle, row-major; nothing above the diagonal is written), from
// the lower triangle of A. False when a pivot is not positive and finite.
template <int S = 0>
inline bool cholesky(const double* A, Index s_runtime, double* L) {
    const Index s = S > 0 ? S : s_runtime;
    for (Index j = 0; j < s; ++j) {
        double pivot = A[j * s + j];
        for (Index k = 0; k < j; ++k) pivot -= L[j * s + k] * L[j * s + k];
        if (!(pivot > 0) || !std::isfinite(pivot)) return false;
        const double root = std::sqrt(pivot);
        L[j * s + j] = root;
        for (Index i = j + 1; i < s; ++i) {
            double value = A[i * s + j];
            for (Index k = 0; k < j; ++k) value -= L[i * s + k] * L[j * s + k];
            L[i * s + j] = value / root;
        }
    }
    return true;
}

// M = L^-1 for lower-triangular L (both row-major; M is zero above the diagonal), by forward
// substitution column by column.
template <int S = 0>
inline void lower_inverse(const double* L, Index s_runtime, double* M) {
    const Index s = S > 0 ? S : s_runtime;
    for (Index j = 0; j < s; ++j) {
        for (Index i = 0; i < j; ++i) M[i * s + j] = 0;
        M[j * s + j] = 1 / L[j * s + j];
        for (Index i = j + 1; i < s; ++i) {
            double value = 0;
            for (Index k = j; k < i; ++k) value -= L[i * s + k] * M[k * s + j];
            M[i * s + j] = value / L[i * s + i];
        }
    }
}

// A^-1 = M^T M from M = L^-1 (row-major, both triangles of the result written).
template <int S = 0>
inline void inverse_from_lower_inverse(const double* M, Index s_runtime, double* inverse) {
    const Index s = S > 0 ? S : s_runtime;
    for (Index i = 0; i < s; ++i)
        for (Index j = 0; j <= i; ++j) {
            double value = 0;
            for (Index k = i; k < s; ++k) value += M[k * s + i] * M[k * s + j];
            inverse[i * s + j] = inverse[j * s + i] = value;
        }
}

}  // namespace metasp
