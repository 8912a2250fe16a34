// Meta Subspace Pursuit: projected gradient steps on the stacked T x d coefficient matrix,
// each followed by rank-s hard thresholding (truncated SVD).
#pragma once

#include "metasp/truncated_svd.hpp"
#include "metasp/types.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace metasp {

// Squared norm of the gradient's projection on the row space, relative to the whole gradient's,
// below which the projection is zero but for rounding.
constexpr double kVanishingProjection = 1e-16;

enum class Status { converged, max_iter, diverged, interrupted };
std::string to_string(Status status);

struct SolveOptions {
    bool adaptive_step = true;  // normalized IHT step; otherwise the fixed step below
    double step = 1.0;          // gamma of theta_t += gamma / m_t X_t^T r_t
    int max_iter = 1000;
    double tol = 1e-10;  // stop when ||Theta+ - Theta||_F <= tol ||Theta+||_F; 0: run max_iter
    // A loss above divergence_factor times the loss at the start counts as diverged.
    double divergence_factor = 1e8;
    int n_threads = 1;
    std::uint64_t seed = 0;     // random start of the first truncated SVD
    RowMatrix reference_B;      // (s, d) orthonormal rows, or empty: no sin-angle history
    SVDOptions svd;
};

struct SolveResult {
    RowMatrix Theta;          // (T, d) = W B
    RowMatrix W;              // (T, s)
    RowMatrix B;              // (s, d), orthonormal rows
    Vector singular_values;   // (s,)
    int n_iter = 0;
    Status status = Status::max_iter;
    double initial_loss = 0;  // mean task loss at Theta = 0
    // One entry per iteration: the loss (mean over tasks of ||r_t||^2 / m_t) of the new
    // iterate, the step, the relative change, the sin angle to reference_B, the SVD steps.
    std::vector<double> loss, step, rel_change, sin_angle;
    std::vector<int> svd_steps;
};

SolveResult solve(const TasksView& tasks, Index s, const SolveOptions& options,
                  const StopRequested& stop_requested = {});

// Largest principal angle (its sine) between span(V) and the row space of B:
// ||(I - B^T B) V||_2 for orthonormal V (d x s) and B (s x d); accurate for tiny angles.
double sin_angle(const Matrix& V, const RowMatrix& B);

}  // namespace metasp
