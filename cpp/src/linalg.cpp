#include "metasp/linalg.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>

namespace metasp {

double sin_angle(const Matrix& V, const RowMatrix& B) {
    const Matrix outside = V - B.transpose() * (B * V);
    const Eigen::SelfAdjointEigenSolver<Matrix> eig(outside.transpose() * outside,
                                                    Eigen::EigenvaluesOnly);
    return std::sqrt(std::max(eig.eigenvalues().maxCoeff(), 0.0));
}

}  // namespace metasp
