"""What every Meta-SP fit goes through before it is returned: the head prior, the diagnostics,
the data's units and the warnings. :func:`metasp.fit`, :func:`metasp.polish` and
:func:`metasp.reference.fit` all finish in :func:`postprocess`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from . import kernels
from ._diagnostics import Diagnostic, checks_rank, diagnose
from ._prior import fit_head_prior, least_squares_heads
from ._result import MetaSPResult, checked, warn_about_diagnostics, warn_about_status
from ._scaling import Scale


class Passes(NamedTuple):
    """The passes over the data the post-processing makes: the compiled kernels by default,
    their NumPy twins for the reference (which must not depend on the compiled code it tests).
    """

    #: ``task_statistics(tasks, B, heads=None)``, as :func:`metasp.kernels.task_statistics`
    task_statistics: Callable
    #: ``gradient(tasks, Theta)``, as :func:`metasp.kernels.gradient`
    gradient: Callable
    #: one EM step of the head prior, as :func:`metasp.reference.head_prior_em_step`; None for
    #: the compiled one
    em_step: Callable | None = None


def compiled_passes(n_threads: int) -> Passes:
    """The compiled kernels, on ``n_threads`` threads."""
    return Passes(partial(kernels.task_statistics, n_jobs=n_threads),
                  partial(kernels.gradient, n_jobs=n_threads))


def heads_shrunk(result: MetaSPResult) -> bool:
    """Whether the fit ended with random heads (posterior means, shrunk on purpose), not with
    least-squares heads (fixed heads, or the polish)."""
    phase = result.history.get("phase", ())
    return len(phase) > 0 and phase[-1] == "random_heads"


def postprocess(result: MetaSPResult, given, work, scale: Scale,
                passes: Passes | None = None) -> MetaSPResult:
    """The head prior, the diagnostics and the warnings of a fit, in the data's units.

    ``result`` was fitted to the rescaled ``work.tasks`` (see :func:`metasp._scaling.rescaled`);
    ``given`` are the validated arguments as given, ``work`` the same on the rescaled data
    (:func:`metasp._validation.rescaled_arguments`). ``passes`` default to the compiled kernels.
    """
    passes = compiled_passes(work.n_threads) if passes is None else passes
    tasks = work.tasks
    statistics = None
    # Random heads are shrunk on purpose; the rank check reads the residual correlations at
    # least-squares heads in the fitted subspace instead, outside that subspace.
    shrunk = heads_shrunk(result)
    if result.status != "diverged":
        # The head prior behind adapt(prior="empirical") (what result.fit_prior(tasks) does).
        # The diagnostics reuse its per-task statistics, and the same pass over X gives them
        # the gradient at Theta = W B when the rank check needs it.
        statistics = passes.task_statistics(
            tasks, result.B, heads=result.W if checks_rank(result, work) and not shrunk else None)
        result.head_mean, result.head_cov, result.noise_variance = fit_head_prior(
            statistics, tasks.n_samples, n_threads=work.n_threads, em_step=passes.em_step)

    def gradient(Theta):
        if statistics is not None and statistics.G is not None:
            return statistics.G
        if shrunk:
            heads = least_squares_heads(statistics.gram, statistics.cross)
            G = passes.gradient(tasks, heads @ result.B).G
            G -= (G @ result.B.T) @ result.B
            return G
        return passes.gradient(tasks, Theta).G

    # The findings are ratios, the same at any scale; their advice names the step as given.
    result.diagnostics = diagnose(result, work._replace(step=given.step), gradient,
                                  None if statistics is None else statistics.gram)
    result = checked(unscaled(result, scale))
    warn_about_status(result, given.adaptive, given.step, given.tol)
    warn_about_diagnostics(result)
    return result


def unscaled(result: MetaSPResult, scale: Scale) -> MetaSPResult:
    """``result``, fitted to X * 2^-x and y * 2^-y, in the data's units (in place)."""
    if scale.identity:
        return result
    heads = scale.y - scale.x  # theta = W B scales as y / X; B is the same

    def times(values, exponent):
        with np.errstate(over="ignore"):  # overflow is reported by checked()
            return np.ldexp(np.asarray(values, dtype=np.float64), exponent)

    result.W, result.Theta = times(result.W, heads), times(result.Theta, heads)
    result.singular_values = times(result.singular_values, heads)
    if not (np.isfinite(result.W).all() and np.isfinite(result.Theta).all()):
        raise FloatingPointError(
            f"the fitted heads are of order y / X = 2^{heads} (largest |y| about 2^{scale.y}, "
            f"largest |X| about 2^{scale.x}), beyond the float64 range: divide y (or multiply "
            f"X) by a large power of ten before fitting")
    history = result.history
    for key in ("loss", "start_loss"):  # squared residuals: units of y^2
        if key in history:
            history[key] = times(history[key], 2 * scale.y)
    if "step" in history:  # gamma X^T X is invariant; saturated where beyond float64
        history["step"] = np.minimum(times(history["step"], -2 * scale.x), np.finfo(float).max)
    for key in ("marginal_nll", "holdout_score"):  # -log density per sample: + log(2^y)
        if key in history:
            history[key] = np.asarray(history[key]) + scale.y * np.log(2.0)
    if result.head_mean is not None:
        mean, cov = times(result.head_mean, heads), times(result.head_cov, 2 * heads)
        noise = float(times(result.noise_variance, 2 * scale.y))
        tiny = np.finfo(float).tiny  # below it, float64 keeps too few digits for an inverse
        if np.isfinite(cov).all() and np.diag(cov).min() >= tiny and tiny <= noise < np.inf:
            result.head_mean, result.head_cov, result.noise_variance = mean, cov, noise
        else:
            noise_exponent = int(np.log2(result.noise_variance)) + 2 * scale.y
            cov_exponent = int(np.log2(np.diag(result.head_cov).max())) + 2 * heads
            result.head_mean = result.head_cov = result.noise_variance = None
            result.diagnostics.append(Diagnostic("prior_out_of_range", (
                f"The head prior is beyond the float64 range in the data's units (noise "
                f"variance about 2^{noise_exponent}, head variances about 2^{cov_exponent}), so "
                f"it is left unset and adapt(prior='empirical') is unavailable. Scale y (or X) "
                f"by a power of ten towards 1 before fitting, or adapt with prior='ridge'.")))
    return result
