"""Failure signatures of a Meta-SP fit, each with what to do about it.

The paper names three ways Meta-SP fails: the loss oscillates (the step is too large), the loss
plateaus well above the noise level (the rank is too small, or the data too noisy), and the
error grows with the iterations (too few samples). :func:`diagnose` looks for each in a
finished fit, and for a fourth seen on real data: a subspace direction along which most tasks'
features barely vary (weak direction), which makes the head prior extrapolate on new tasks.
The codes a finding can carry are those of :data:`CODES`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._result import MetaSPResult
from .kernels import truncated_svd

#: Every code a :class:`Diagnostic` can carry, with what it means; the one list of them.
CODES = {
    "step_too_large": "the loss oscillates or diverges with a fixed step",
    "rank_too_small": "a shared direction is left in the residuals at a stationary point",
    "too_few_samples": "fewer samples than the model's unknowns, or the error to reference_B "
                       "grew during the iterations",
    "weak_direction": "a subspace direction along which most tasks' features barely vary",
    "prior_out_of_range": "a head prior float64 cannot hold in the data's units (left unset)",
}


class Diagnostic(NamedTuple):
    """One finding about a fit: a stable ``code`` and an actionable ``message``."""

    #: One of the codes of ``metasp._diagnostics.CODES`` (listed below)
    code: str
    message: str


Diagnostic.__doc__ += "\n\nNotes\n-----\nThe codes:\n\n" + "\n".join(
    f"- ``{code}``: {meaning}." for code, meaning in CODES.items())

# Oscillation: at least this fraction of the last iterations raised the loss.
OSCILLATION_FRACTION = 0.3
OSCILLATION_WINDOW = 20
# Relative rises of the loss below this are rounding (a converged fit's loss moves by a few
# units in the last place: 2e-16 to 1e-15 at make_hps(120, 15, 10, 2, 0.3), step 0.5).
ROUNDING_RISE = 1e-12
# Rank: the top squared singular value of the residual correlations, relative to the edge of
# their noise bulk, above which a shared direction is left in the residuals. Pure noise stays
# near 1 (the Marchenko-Pastur edge): measured at most 1.25 for right-rank fits of make_hps data
# (6 shapes x 5 seeds, sigma 0.1 to 2), 0.9 to 4.9 for fits of rank s - 1.
RANK_SPIKE = 1.6
# Up to this many features (or tasks), rank_spike takes the top eigenvalue of the Gram matrix:
# for noise-like residual correlations (a right-rank fit) that was 5-10x faster than the
# subspace iteration, whose search block converges slowly without a spectral gap (measured
# from 2000 x 100 to 20000 x 500 and 5000 x 1000, one thread).
SMALL_GRAM = 1024
# The rank check needs a fit this close to a stationary point (relative change).
STATIONARY = 1e-6
# A final loss below this fraction of the mean squared target is an exact fit: its residuals
# are rounding, with nothing left to explain.
EXACT_FIT = 1e-12
# Growing error: the final sin angle to reference_B this many times its minimum (and above
# GROWTH_FLOOR) means the iterates moved away from the truth.
GROWTH_FACTOR = 2.0
GROWTH_FLOOR = 1e-3
# Weak direction: the largest per-task prior predictive variance over the median one. On the
# Beijing PM2.5 day tasks (benchmarks/pm25_ranks.py: ranks 1-10, 5 splits, k = 3, 5, 8), the
# fits with ratios up to 6.5 scored few-shot MSEs of 0.14-0.26 (ranks 2-10), those at 24-92
# up to 1.9, and those at 548-1e9 up to 2e5 (make_hps data give about 2).
WEAK_DIRECTION = 50.0


def _oscillating(loss: np.ndarray) -> bool:
    recent = loss[-OSCILLATION_WINDOW - 1:]
    if len(recent) < OSCILLATION_WINDOW // 2:
        return False
    # A converged fit's loss moves by rounding, up or down: only larger rises count.
    rises = np.diff(recent) > ROUNDING_RISE * np.abs(recent[1:])
    return np.mean(rises) >= OSCILLATION_FRACTION


def rank_spike(gradient: np.ndarray, task_sizes: np.ndarray, s: int, n_jobs=None) -> float:
    """Top squared singular value of the residual correlations over the noise-bulk edge.

    ``gradient`` holds the rows :math:`X_t^\\top r_t / m_t`; scaled by :math:`\\sqrt{m_t}` they
    have about the same noise level in every task. For a T x d' matrix of i.i.d. noise of
    variance v the top squared singular value is about :math:`v(\\sqrt{T} + \\sqrt{d'})^2`; v is
    estimated from the whole matrix, and d' = d - s since the rows are orthogonal to the fitted
    subspace at a stationary point.
    """
    G = gradient * np.sqrt(task_sizes)[:, None]
    T, d = G.shape
    total = np.sum(G**2)
    if total == 0 or not np.isfinite(total):
        return 0.0
    if min(T, d) <= SMALL_GRAM:
        top = np.linalg.eigvalsh(G.T @ G if d <= T else G @ G.T)[-1]
    else:
        top = truncated_svd(G, 1, random_state=0, n_jobs=n_jobs).singular_values[0] ** 2
    return spike_over_edge(top, total, T, d, s)


def spike_over_edge(top: float, total: float, T: int, d: int, s: int) -> float:
    """:func:`rank_spike` from the top squared singular value and the squared sum of the scaled
    residual correlations (T x d)."""
    if total == 0 or not np.isfinite(total):
        return 0.0
    effective = max(d - s, 1)
    variance = total / (T * effective)
    edge = variance * (np.sqrt(T) + np.sqrt(effective)) ** 2
    return float(top / edge)


def checks_rank(result: MetaSPResult, args) -> bool:
    """Whether :func:`diagnose` runs the rank check, which needs the gradient at the fit."""
    tasks, s = args.tasks, args.s
    loss = np.asarray(result.history.get("loss", ()))
    exact_fit = len(loss) and loss[-1] <= EXACT_FIT * np.mean(tasks.y**2)
    # Only at a stationary point are the residual correlations noise when the rank is right
    # (not after an early stop, e.g. by sin_tol).
    change = np.asarray(result.history.get("rel_change", ()))
    phase = result.history.get("phase", ())
    # L-BFGS stops on the loss, with steps of about the square root of its tolerance.
    stationary = (len(change) and change[-1] <= STATIONARY) or (
        len(phase) and phase[-1] == "random_heads" and result.status == "converged")
    # Where the noise level was chosen by held-out tasks, tasks have too few samples for the
    # residual correlations to separate a missed direction from the subspace's own error.
    scarce = len(result.history.get("noise_candidates", ()))
    return bool(result.status in ("converged", "stalled") and stationary and not scarce
                and min(tasks.n_tasks, tasks.n_features) > s and not exact_fit)


def diagnose(result: MetaSPResult, args, gradient, gram=None, *, spike=None,
             variance_ratio=None) -> list:
    """Findings for a finished fit; ``args`` are the validated fit arguments.

    ``gradient(Theta)`` returns the (T, d) rows :math:`X_t^\top r_t / m_t`; it costs a pass
    over the data, so it is called only when the rank check applies (:func:`checks_rank`).
    ``gram`` (T, s, s) holds the tasks' :math:`Z_t^\top Z_t` in the fitted subspace, from
    fitting the head prior; the weak-direction check needs it and the prior. Where the tasks
    live elsewhere (a cluster), ``spike()`` replaces :func:`rank_spike` of the gradient and
    ``variance_ratio()`` the weak-direction ratio of ``gram``.
    """
    findings = []
    tasks, s = args.tasks, args.s
    loss = np.asarray(result.history.get("loss", ()))
    iht = loss[: int(np.sum(result.history.get("phase", np.array([])) == "iht"))] if len(loss) else loss
    if not args.adaptive and (result.status == "diverged" or _oscillating(iht)):
        what = "diverged" if result.status == "diverged" else "oscillates"
        findings.append(Diagnostic(
            "step_too_large",
            f"The loss {what} with the fixed step {args.step:g}: the step is too large for these "
            f"tasks. Use step='auto' (no tuning needed) or a smaller step such as "
            f"{args.step / 4:g}.",
        ))
    T, d = tasks.n_tasks, tasks.n_features
    unknowns = s * (T + d - s)
    if tasks.n_samples < unknowns:
        if getattr(args, "heads", "fixed") == "random":
            what = ("no estimator recovers the subspace exactly, even without noise; with the "
                    "heads integrated out it is still estimated, by shrinking them towards their "
                    "common prior, but expect a large error")
        else:
            what = "the subspace cannot be identified with a free head per task"
        findings.append(Diagnostic(
            "too_few_samples",
            f"There are {tasks.n_samples} samples for the {unknowns} unknowns of a rank-{s} "
            f"model, below the information limit s(T + d - s) ({unknowns / T:.1f} samples per "
            f"task are needed, there are {tasks.n_samples / T:.1f}): {what}. Collect more "
            f"samples per task, add tasks, or lower s.",
        ))
    sin = np.asarray(result.history.get("sin_angle", ()))
    if len(sin) > 1 and sin[-1] > max(GROWTH_FACTOR * sin.min(), GROWTH_FLOOR):
        findings.append(Diagnostic(
            "too_few_samples",
            f"The sin angle to reference_B grew from {sin.min():.3g} to {sin[-1]:.3g} during the "
            f"iterations: too few samples per task for this step. Collect more samples, use "
            f"step='auto', or lower s.",
        ))
    if checks_rank(result, args):
        spike = (rank_spike(gradient(result.Theta), tasks.task_sizes, s, args.n_threads)
                 if spike is None else spike())
        if spike > RANK_SPIKE:
            findings.append(Diagnostic(
                "rank_too_small",
                f"The loss plateaued with a shared direction left in the residuals (its "
                f"strength is {spike:.1f} times the noise level): the rank s = {s} is too "
                f"small. Increase s (metasp.select_rank chooses it by cross-validation).",
            ))
    if (gram is not None or variance_ratio is not None) and result.head_cov is not None \
            and s < d:
        ratio = (_predictive_variance_ratio(gram, result.head_cov, tasks.task_sizes)
                 if variance_ratio is None else variance_ratio())
        if ratio > WEAK_DIRECTION:
            findings.append(Diagnostic(
                "weak_direction",
                f"Some training tasks' prior predictive variance is {ratio:.3g} times the "
                f"typical task's: the subspace has a direction along which most tasks' "
                f"features barely vary (e.g. a rare-event column, near-constant within most "
                f"tasks, minus the intercept), so heads along it are huge and few-shot "
                f"predictions on rows that do vary along it can be wild. Choose the rank with "
                f"metasp.select_rank(..., holdout='tasks'), which scores such fits on new tasks, "
                f"or try a smaller s.",
            ))
    return findings


def _predictive_variance_ratio(gram, head_cov, task_sizes) -> float:
    r"""Largest over median per-task prior predictive variance, mean over the task's rows of
    :math:`z^\top \Sigma z` (``gram``: the tasks' :math:`Z_t^\top Z_t`)."""
    variance = np.einsum("tsr,rs->t", gram, head_cov) / task_sizes
    typical = np.median(variance)
    return float(variance.max() / typical) if typical > 0 else 0.0
