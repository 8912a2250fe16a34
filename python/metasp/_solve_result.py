"""From what the solver returns to a MetaSPResult in the data's units: shared by
:func:`metasp.fit`, :func:`metasp.polish` and the NumPy reference :func:`metasp.reference.fit`."""

from __future__ import annotations

import numpy as np

from ._result import Diagnostic, MetaSPResult
from ._validation import Scale


def make_result(out, args) -> MetaSPResult:
    """A MetaSPResult from the ``_core.SolveResult`` of ``_core.solve`` (or the reference's
    run, which has the same attributes)."""
    records = out.history
    history = {key: np.asarray(records[key]) for key in ("loss", "step", "rel_change")}
    if args.conjugate:
        history["beta"] = np.asarray(records["beta"])
    if args.reference_B is not None:
        history["sin_angle"] = np.asarray(records["sin_angle"])
    for key in ("svd_steps", "seconds", "svd_seconds"):  # C++ solver only
        if key in records:
            history[key] = np.asarray(records[key])
    history["phase"] = np.where(np.asarray(records["phase"]) == 0, "iht", "polish")
    history["start_loss"] = np.asarray(out.start_loss)
    return MetaSPResult(
        B=out.B, W=out.W, Theta=out.Theta, singular_values=out.singular_values,
        n_iter=out.n_iter, status=out.status, history=history,
    )


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
