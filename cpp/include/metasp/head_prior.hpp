// The Gaussian prior on task heads behind few-shot adaptation: w_t ~ N(mean, cov),
// y_t = Z_t w_t + e_t, e_t ~ N(0, noise I), fitted by EM from the tasks' statistics in the
// subspace (statistics.hpp). The SQUAREM acceleration around the step lives in Python.
#pragma once

#include "metasp/types.hpp"

namespace metasp {

struct HeadPrior {
    Vector mean;   // (s,)
    Matrix cov;    // (s, s), symmetric positive definite
    double noise;  // > 0
};

struct HeadPriorStep {
    HeadPrior next;         // the EM update
    double log_likelihood;  // of the parameters the step started from, up to its constant
};

// One EM step from `prior`, for tasks with statistics gram (T, s*s: Z_t^T Z_t row-major),
// cross (T, s: Z_t^T y_t) and squares (T: y_t^T y_t), n samples in all. The new covariance
// gets `floor` added to its diagonal and the new noise is at least `floor`. Tasks are summed
// in fixed chunks, in order: the result does not depend on the thread count.
HeadPriorStep head_prior_em_step(const Eigen::Ref<const RowMatrix>& gram,
                                 const Eigen::Ref<const RowMatrix>& cross,
                                 const Eigen::Ref<const Vector>& squares, const HeadPrior& prior,
                                 double n, double floor, int n_threads);

}  // namespace metasp
