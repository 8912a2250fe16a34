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
// Consecutive step halvings of CGIHT's backtracking before the loss counts as diverging.
constexpr int kMaxRetries = 40;
// Factor on switch_tol when the polish has no Newton step (d * s above max_dense): plain
// alternating least squares converges slowly, so hard thresholding runs longer before it.
constexpr double kSlowPolishSwitch = 1e-6;
// Defaults of SolveOptions (also read by the Python layer and the NumPy reference).
constexpr double kSwitchTol = 1e-2;
constexpr int kSwitchWindow = 10;
constexpr int kPatience = 100;
constexpr double kDivergenceFactor = 1e8;
// Inside the solver each truncated SVD stops at this fraction of the iterate's last relative
// change, or at SVDOptions::tol, whichever is larger.
constexpr double kSVDRelativeTol = 1e-4;

struct SolveOptions {
    bool adaptive_step = true;  // normalized IHT step; otherwise the fixed step below
    double step = 1.0;          // gamma of theta_t += gamma / m_t X_t^T r_t
    bool conjugate = false;     // CGIHT: conjugate directions (adaptive step only)
    bool polish = false;        // alternating least squares after the hard-thresholding phase
    Init init = Init::zero;
    RowMatrix init_B;  // (s, d) when init == Init::given
    // Further starts, each from the span of a (d, s) basis (e.g. random); the start with the
    // lowest final loss is returned.
    std::vector<Matrix> starts;
    int max_iter = 1000;  // iterations of both phases together (and per start)
    double tol = 1e-10;   // stop when ||Theta+ - Theta||_F <= tol ||Theta+||_F; 0: run max_iter
    double sin_tol = 0;   // > 0 with reference_B: also stop once the sin angle is below it
    // With polish: hand over to least squares once the relative change is below switch_tol,
    // or the loss improved by less than a relative switch_tol^2 over the last switch_window
    // iterations (a plateau: the basin is found).
    double switch_tol = kSwitchTol;
    int switch_window = kSwitchWindow;
    // Without polish and with tol > 0: "stalled" when neither the best loss nor the best
    // relative change has improved for this many iterations.
    int patience = kPatience;
    // A loss above divergence_factor times the loss at Theta = 0 counts as diverged.
    double divergence_factor = kDivergenceFactor;
    int n_threads = 1;
    std::uint64_t seed = 0;  // random start of the first truncated SVD
    RowMatrix reference_B;   // (s, d) orthonormal rows, or empty: no sin-angle history
    SVDOptions svd{kSVDTol, kSVDMaxSteps, kSVDRelativeTol};
    BasisSolveOptions basis;
};

// What one iteration did. In the least-squares phase (phase 1) step and beta are NaN and
// svd_steps and svd_seconds 0; sin_angle is NaN without reference_B.
struct IterationRecord {
    double loss = 0;  // mean over tasks of ||r_t||^2 / m_t at the new iterate
    double step = 0;
    double beta = 0;        // conjugacy coefficient: 0 on a restart, NaN when not applicable
    double rel_change = 0;  // ||Theta+ - Theta||_F / ||Theta+||_F
    double sin_angle = 0;   // to reference_B
    int svd_steps = 0;
    int phase = 0;           // 0 hard thresholding, 1 least squares
    double seconds = 0;      // wall clock of the iteration
    double svd_seconds = 0;  // ... and of its truncated SVD
};

struct SolveResult {
    RowMatrix Theta;         // (T, d) = W B
    RowMatrix W;             // (T, s)
    RowMatrix B;             // (s, d), orthonormal rows
    Vector singular_values;  // (s,)
    int n_iter = 0;          // iterations of the returned start, both phases
    int n_iht_iter = 0;      // of which hard thresholding
    Status status = Status::max_iter;
    double initial_loss = 0;               // mean task loss at Theta = 0
    std::vector<IterationRecord> history;  // one per iteration of the returned start
    // Per start: final loss and iterations; best_start is the one returned.
    std::vector<double> start_loss;
    std::vector<int> start_iter;
    int best_start = 0;
};

SolveResult solve(const TasksView& tasks, Index s, const SolveOptions& options,
                  const StopRequested& stop_requested = {});

}  // namespace metasp
