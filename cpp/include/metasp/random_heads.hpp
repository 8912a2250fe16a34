// The random-heads model of the tasks: theta_t = U z_t with z_t ~ N(0, I_s) and noise
// N(0, noise I), so y_t ~ N(0, X_t U U^T X_t^T + noise I). One pass over X gives its negative
// log marginal likelihood, the gradient in U (Fisher's identity: the gradient of the expected
// complete-data log likelihood) and the posterior heads. The optimiser lives in Python.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

struct MarginalPass {
    // sum_t log det(X_t U U^T X_t^T + noise I) + y_t^T (...)^-1 y_t: twice the negative log
    // marginal likelihood, less N log(2 pi). +inf when a posterior precision is not positive
    // definite (U or noise not finite) or a sum overflows; the other fields are then zero.
    double deviance = 0;
    Matrix gradient;      // (d, s): d deviance / d U
    double expected = 0;  // sum_t E||y_t - X_t U z_t||^2 under the posterior
    RowMatrix heads;      // (T, s): posterior means of z_t
    Vector task_loss;     // (T,): ||y_t - X_t U heads_t||^2 / m_t
};

// U: (d, s), noise > 0. Each task's rows are read twice while they are in cache: Z_t = X_t U,
// then X_t^T (Z_t E[z z^T] - y_t E[z]^T). Tasks are summed in a fixed number of chunks, in
// order: the result does not depend on the thread count.
// Throws std::invalid_argument unless U (rows x s) has shape (d, s) with 1 <= s <= d and noise
// is positive and finite.
void check_marginal_shape(const TasksView& tasks, Index rows, Index s, double noise);

MarginalPass marginal_pass(const TasksView& tasks, const Eigen::Ref<const Matrix>& U, double noise,
                           int n_threads);

}  // namespace metasp
