// The least-squares polish: alternating exact least squares on Theta = W U^T once hard
// thresholding has found the basin. Each half-step solves its least-squares problem exactly,
// so the loss never increases; near the information limit this converges where IHT alone
// crawls. The basis step is a damped Newton step when that lowers the loss (newton.hpp), else
// the exact least-squares step (basis_system.hpp); the heads step is heads.hpp's.
#pragma once

#include "metasp/basis_system.hpp"
#include "metasp/heads.hpp"
#include "metasp/types.hpp"

#include <vector>

namespace metasp {

// Damping of the Newton step: attempts per sweep before the ALS step, the factor it grows
// by after a failure (and shrinks by after a success), and its smallest non-zero value.
constexpr int kDampingAttempts = 6;
constexpr double kDampingFactor = 10;
constexpr double kMinDamping = 1e-6;

// Below this relative change, a sweep whose loss did not decrease is rounding at a
// stationary point: converged rather than stalled.
constexpr double kStationaryChange = 1e-6;

// The loss has stagnated when the last kStagnationWindow sweeps together lowered it by less
// than kLossStagnation of its value: a flat valley (a direction the data barely identify)
// where the iterate creeps for many sweeps while the fit no longer improves measurably.
constexpr int kStagnationWindow = 10;
constexpr double kLossStagnation = 1e-5;

struct PolishOptions {
    int max_iter = 100;  // sweeps (one basis step and one heads step each)
    double tol = 1e-10;  // stop when ||Theta+ - Theta||_F <= tol ||Theta+||_F
    double sin_tol = 0;  // > 0: also stop when the sin angle to reference_B is below it
    int n_threads = 1;
    // Try damped Newton steps of the basis first (heads eliminated jointly, then re-fitted
    // exactly); fall back to the ALS basis step when none lowers the loss. Dense normal
    // equations only (d * s <= basis.max_dense).
    bool newton = true;
    RowMatrix reference_B;  // (s, d) or empty
    BasisSolveOptions basis;
};

enum class PolishStatus { converged, max_iter, stalled, interrupted };

struct PolishResult {
    Factors factors;
    RowMatrix Theta;
    double start_loss = 0;  // loss of the heads fitted in the starting subspace
    // One entry per sweep: loss (mean over tasks of ||r_t||^2 / m_t), relative change, sin
    // angle, wall-clock seconds.
    std::vector<double> loss, rel_change, sin_angle, seconds;
    int n_iter = 0;
    int n_newton = 0;  // sweeps whose basis step was a Newton one (the rest: ALS)
    PolishStatus status = PolishStatus::max_iter;
};

// Alternating least squares from the subspace spanned by V0 (d x s): heads, then (basis,
// heads) sweeps, each basis step damped Newton when that lowers the loss, until the relative
// change is below tol or the loss stops decreasing (then the better of the last two iterates
// is returned).
PolishResult polish(const TasksView& tasks, const Eigen::Ref<const Matrix>& V0,
                    const PolishOptions& options, const StopRequested& stop_requested = {});

}  // namespace metasp
