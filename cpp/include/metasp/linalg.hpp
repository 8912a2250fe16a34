// Small dense helpers shared by the solver, the truncated SVD and the polish: sums in a fixed
// order, orthonormal bases and the distance between subspaces.
#pragma once

#include "metasp/types.hpp"

#include <Eigen/QR>

namespace metasp {

// Summed in index order, so the value does not depend on the thread count that filled it.
inline double sum(const Vector& values) {
    double total = 0;
    for (Index t = 0; t < values.size(); ++t) total += values[t];
    return total;
}

inline double mean(const Vector& values) { return sum(values) / double(values.size()); }

// The first `cols` columns of the orthogonal factor of a Householder QR.
inline Matrix thin_q(const Eigen::HouseholderQR<Matrix>& qr, Index cols) {
    return qr.householderQ() * Matrix::Identity(qr.rows(), cols);
}

// An orthonormal basis of span(Y) (rows x cols, full column rank), by Householder QR.
inline Matrix orthonormal_columns(const Eigen::Ref<const Matrix>& Y) {
    return thin_q(Eigen::HouseholderQR<Matrix>(Y), Y.cols());
}

// Largest principal angle (its sine) between span(V) and the row space of B:
// ||(I - B^T B) V||_2 for orthonormal V (d x s) and B (s x d); accurate for tiny angles.
double sin_angle(const Matrix& V, const RowMatrix& B);

}  // namespace metasp
