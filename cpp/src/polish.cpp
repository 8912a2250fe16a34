#include "metasp/polish.hpp"

#include "metasp/linalg.hpp"
#include "metasp/newton.hpp"
#include "metasp/parallel.hpp"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <utility>

namespace metasp {
namespace {

// ||next - theta||_F / ||next||_F for next = W V^T of the factors (written into next).
double relative_change(const Factors& factors, const RowMatrix& theta, RowMatrix& next,
                       int n_threads) {
    tall_product(factors.W, factors.V.transpose(), next, n_threads);
    const double norm = next.norm(), change = (next - theta).norm();
    return norm > 0 ? change / norm : 0.0;
}

// The iterate of the polish and the buffers its sweeps reuse.
struct PolishState {
    Factors current;        // canonical factors of the iterate
    RowMatrix theta, next;  // W V^T of the iterate, and of the candidate being measured
    double loss = 0;
    double damping = 0;  // of the Newton step, relative to the mean diagonal of its matrix
    RowMatrix W;         // the heads being tried (T x s)
    Vector per_task;
    // X V for the basis of the last heads (kept: the Newton operator needs X V for the rotated
    // basis of the next sweep, Z_heads (V_heads^T V)), and for the heads being tried.
    RowMatrix Z_heads, Z_step;
    Matrix V_heads, V_step;
};

// The heads step in span(state.V_step): the candidate's factors, and its loss as the result.
double fit_heads(const TasksView& tasks, PolishState& state, int n_threads, Factors& candidate) {
    task_heads(tasks, state.V_step, state.W, state.per_task, n_threads, &state.Z_step);
    candidate = canonical_factors(state.W, state.V_step);
    return mean(state.per_task);
}

// Damped Newton (Levenberg-Marquardt on the Newton system): basis V + D with the heads
// re-fitted exactly, kept only if it lowers the loss; the damping shrinks after a success and
// grows after a failure (flat, curved valleys need it). Solved matrix-free by conjugate
// gradients when the work estimate favours it, else (or when that does not converge) from the
// dense system. True when a step was accepted (candidate and next_loss are then set).
bool newton_step(const TasksView& tasks, const PolishOptions& options, PolishState& state,
                 Factors& candidate, double& next_loss, const StopRequested& stop_requested) {
    const auto stop = [&] { return stop_requested && stop_requested(); };
    const Index d = tasks.n_features(), s = state.current.V.cols();
    const int n_threads = options.n_threads;
    const Factors& current = state.current;
    double& damping = state.damping;
    const int cg_budget = newton_cg_budget(tasks, s, options.basis.newton_solve);
    std::optional<NewtonOperator> op;
    std::optional<NormalSystem> system;
    if (cg_budget > 0) {
        RowMatrix Z(tasks.n_samples(), s);
        tall_product(state.Z_heads, Matrix(state.V_heads.transpose() * current.V), Z, n_threads);
        op.emplace(tasks, current.W, current.V, std::move(Z), n_threads);
    } else {
        system = assemble_basis_system(tasks, current.W, &current.V, BasisStep::newton, n_threads,
                                       stop_requested);
    }
    // Every attempt may take seconds for a large d s: each polls first.
    for (int attempt = 0; attempt < kDampingAttempts && !stop(); ++attempt) {
        Matrix D;
        if (op) {
            const double shift = damping * op->scale();
            const CGOutcome outcome =
                newton_cg(*op, shift, cg_budget, kStepFloor * options.tol, D, stop_requested);
            if (outcome == CGOutcome::stopped) break;
            if (outcome == CGOutcome::indefinite) D.resize(0, 0);
            if (outcome == CGOutcome::unconverged) {
                op.reset();
                system = assemble_basis_system(tasks, current.W, &current.V, BasisStep::newton,
                                               n_threads, stop_requested);
                if (stop()) break;
            }
        }
        if (system) D = solve_basis_system(*system, d, s, damping * system->scale, true);
        if (D.size() > 0) {
            state.V_step = orthonormal_columns(current.V + D);
            next_loss = fit_heads(tasks, state, n_threads, candidate);
            // A step within tol of the iterate is the converged one: whether its loss
            // is lower is rounding, and damping it further would only repeat it.
            if (next_loss < state.loss ||
                relative_change(candidate, state.theta, state.next, n_threads) <= options.tol) {
                damping = damping / kDampingFactor < kMinDamping ? 0.0 : damping / kDampingFactor;
                return true;
            }
        }
        damping = std::max(damping * kDampingFactor, kMinDamping);
    }
    return false;
}

// The exact least-squares step of the basis for fixed heads (ALS), then the heads step. False
// when stopped during the basis step.
bool als_step(const TasksView& tasks, const PolishOptions& options, PolishState& state,
              Factors& candidate, double& next_loss, const StopRequested& stop_requested) {
    const Factors& current = state.current;
    const Matrix U = basis_least_squares(tasks, current.W, current.V, options.n_threads,
                                         options.basis, stop_requested);
    if (stop_requested && stop_requested()) return false;
    state.V_step = canonical_factors(current.W, U).V;
    next_loss = fit_heads(tasks, state, options.n_threads, candidate);
    return true;
}

// The stopping rule after an accepted sweep: converged (relative change below tol, or the sin
// angle below sin_tol) or stalled (the loss stagnated); empty to go on.
std::optional<PolishStatus> stop_test(const PolishResult& out, const PolishOptions& options,
                                      double rel_change) {
    const bool tracked = options.reference_B.size() > 0;
    if (rel_change <= options.tol) return PolishStatus::converged;
    if (options.sin_tol > 0 && tracked && out.sin_angle.back() <= options.sin_tol)
        return PolishStatus::converged;
    const auto n = out.loss.size();
    const double loss = out.loss.back();
    if (options.tol > 0 && n > size_t(kStagnationWindow) &&
        out.loss[n - 1 - kStagnationWindow] - loss <= kLossStagnation * loss)
        return PolishStatus::stalled;
    return std::nullopt;
}

void check_polish(const TasksView& tasks, const Eigen::Ref<const Matrix>& V0,
                  const PolishOptions& options) {
    check_tasks(tasks);
    check_threads(options.n_threads);
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V0.cols();
    if (V0.rows() != d || s < 1 || s > std::min(T, d))
        throw std::invalid_argument(
            "the starting basis must have shape (d, s), 1 <= s <= min(T, d)");
    if (options.max_iter < 0) throw std::invalid_argument("max_iter must be non-negative");
    const auto& ref = options.reference_B;
    if (ref.size() > 0 && (ref.rows() != s || ref.cols() != d))
        throw std::invalid_argument("reference_B must have shape (s, d)");
}

}  // namespace

PolishResult polish(const TasksView& tasks, const Eigen::Ref<const Matrix>& V0,
                    const PolishOptions& options, const StopRequested& stop_requested) {
    check_polish(tasks, V0, options);
    const Index T = tasks.n_tasks(), d = tasks.n_features(), s = V0.cols();
    const int n_threads = options.n_threads;
    const auto& ref = options.reference_B;

    PolishResult out;
    PolishState state;
    state.W.resize(T, s);
    state.per_task.resize(T);
    state.V_heads = orthonormal_columns(V0);
    task_heads(tasks, state.V_heads, state.W, state.per_task, n_threads, &state.Z_heads);
    state.current = canonical_factors(state.W, state.V_heads);
    out.start_loss = mean(state.per_task);
    state.theta.resize(T, d);
    state.next.resize(T, d);
    tall_product(state.current.W, state.current.V.transpose(), state.theta, n_threads);
    state.loss = out.start_loss;
    out.status = PolishStatus::max_iter;

    const auto stop = [&] { return stop_requested && stop_requested(); };
    for (int k = 0; k < options.max_iter; ++k) {
        if (stop()) {
            out.status = PolishStatus::interrupted;
            break;
        }
        const Clock::time_point started = Clock::now();
        double next_loss = state.loss;
        Factors candidate;
        const bool accepted =
            options.newton && d * s <= options.basis.max_dense &&
            newton_step(tasks, options, state, candidate, next_loss, stop_requested);
        if (accepted) ++out.n_newton;
        if (stop()) {
            out.status = PolishStatus::interrupted;
            break;
        }
        if (!accepted && !als_step(tasks, options, state, candidate, next_loss, stop_requested)) {
            out.status = PolishStatus::interrupted;
            break;
        }
        const double rel_change = relative_change(candidate, state.theta, state.next, n_threads);
        if (!(next_loss < state.loss) && !(rel_change <= options.tol)) {
            // Exact half-steps cannot increase the loss: this is rounding (or an inexact
            // iterative solve), so keep the better iterate we have.
            out.status =
                rel_change <= kStationaryChange ? PolishStatus::converged : PolishStatus::stalled;
            break;
        }
        state.current = std::move(candidate);
        std::swap(state.Z_heads, state.Z_step);
        std::swap(state.V_heads, state.V_step);
        std::swap(state.theta, state.next);
        state.loss = next_loss;
        out.n_iter = k + 1;
        out.loss.push_back(state.loss);
        out.rel_change.push_back(rel_change);
        if (ref.size() > 0) out.sin_angle.push_back(sin_angle(state.current.V, ref));
        out.seconds.push_back(seconds_since(started));
        if (const auto status = stop_test(out, options, rel_change)) {
            out.status = *status;
            break;
        }
    }
    out.factors = std::move(state.current);
    out.Theta = std::move(state.theta);
    return out;
}

}  // namespace metasp
