// Meta Subspace Pursuit: projected gradient steps on the stacked T x d coefficient matrix,
// each followed by rank-s hard thresholding (truncated SVD); optionally along conjugate
// directions (CGIHT) and followed by the alternating least-squares polish of polish.hpp.
#pragma once

#include "metasp/polish.hpp"
#include "metasp/truncated_svd.hpp"
#include "metasp/types.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace metasp {

// Squared norm of the gradient's projection on the row space, relative to the whole gradient's,
// below which the projection is zero but for rounding.
constexpr double kVanishingProjection = 1e-16;

enum class Status { converged, max_iter, diverged, interrupted, stalled };
std::string to_string(Status status);

// Where the first iterate comes from.
enum class Init {
    zero,      // Theta^0 = 0 (the paper)
    spectral,  // top-s row space of the stacked X_t^T y_t / m_t, with least-squares heads
    given,     // the row space of SolveOptions::init_B, with least-squares heads
};

// Restart the conjugate direction when its old part outweighs the new gradient by more than
// this factor inside the current row space (beta "blows up").
constexpr double kMaxConjugacy = 2.0;
// ... and when the conjugate direction's descent (its inner product with the projected
// gradient) or its curvature is below this share of the gradient's own: that is rounding,
// e.g. in a one-dimensional row space of one task, where the direction cancels the gradient
// exactly and the sign of what is left is a coin flip between builds.
constexpr double kMinConjugateShare = 1e-12;

struct SolveOptions {
    bool adaptive_step = true;  // normalized IHT step; otherwise the fixed step below
    double step = 1.0;          // gamma of theta_t += gamma / m_t X_t^T r_t
    bool conjugate = false;     // CGIHT: conjugate directions (adaptive step only)
    bool refine = false;        // alternating least squares after the hard-thresholding phase
    Init init = Init::zero;
    RowMatrix init_B;           // (s, d) when init == Init::given
    // Further starts, each from the span of a (d, s) basis (e.g. random); the start with the
    // lowest final loss is returned.
    std::vector<Matrix> starts;
    int max_iter = 1000;        // iterations of both phases together (and per start)
    double tol = 1e-10;  // stop when ||Theta+ - Theta||_F <= tol ||Theta+||_F; 0: run max_iter
    double sin_tol = 0;  // > 0 with reference_B: also stop once the sin angle is below it
    // With refine: hand over to least squares once the relative change is below switch_tol,
    // or the loss improved by less than a relative switch_tol^2 over the last switch_window
    // iterations (a plateau: the basin is found).
    double switch_tol = 1e-2;
    int switch_window = 10;
    // Without refine and with tol > 0: "stalled" when neither the best loss nor the best
    // relative change has improved for this many iterations.
    int patience = 100;
    // A loss above divergence_factor times the loss at Theta = 0 counts as diverged.
    double divergence_factor = 1e8;
    int n_threads = 1;
    std::uint64_t seed = 0;     // random start of the first truncated SVD
    RowMatrix reference_B;      // (s, d) orthonormal rows, or empty: no sin-angle history
    SVDOptions svd;
    BasisSolveOptions basis;
};

struct SolveResult {
    RowMatrix Theta;          // (T, d) = W B
    RowMatrix W;              // (T, s)
    RowMatrix B;              // (s, d), orthonormal rows
    Vector singular_values;   // (s,)
    int n_iter = 0;           // iterations of the returned start, both phases
    int n_iht_iter = 0;       // of which hard thresholding
    Status status = Status::max_iter;
    double initial_loss = 0;  // mean task loss at Theta = 0
    // One entry per iteration: the loss (mean over tasks of ||r_t||^2 / m_t) of the new
    // iterate, the step (NaN in the least-squares phase), the conjugacy coefficient beta (0 on
    // a restart, NaN when not applicable), the relative change, the sin angle to reference_B,
    // the SVD steps (0 in the least-squares phase), and the phase (0 hard thresholding,
    // 1 least squares); the wall-clock seconds of the iteration and of its truncated SVD (0 in
    // the least-squares phase).
    std::vector<double> loss, step, beta, rel_change, sin_angle, seconds, svd_seconds;
    std::vector<int> svd_steps, phase;
    // Per start: final loss and iterations; best_start is the one returned.
    std::vector<double> start_loss;
    std::vector<int> start_iter;
    int best_start = 0;
};

SolveResult solve(const TasksView& tasks, Index s, const SolveOptions& options,
                  const StopRequested& stop_requested = {});

}  // namespace metasp
