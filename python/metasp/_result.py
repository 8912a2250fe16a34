"""What a Meta-SP fit returns, and how it reports a fit that did not go well."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ._tasks import _check_finite, _numeric_array
from ._validation import is_real

__all__ = ["ConvergenceWarning", "Diagnostic", "DiagnosticWarning", "DivergenceWarning",
           "MetaSPResult"]


class ConvergenceWarning(UserWarning):
    """The solver stopped at ``max_iter`` before reaching ``tol``."""


class DivergenceWarning(RuntimeWarning):
    """The iteration diverged; the result is the last finite iterate and should not be used."""


class DiagnosticWarning(UserWarning):
    """The fit shows a known failure signature; ``result.diagnostics`` says which and what to do."""


class Diagnostic(NamedTuple):
    """One finding about a fit: a stable ``code`` and an actionable ``message``."""

    code: str  #: "step_too_large", "rank_too_small" or "too_few_samples"
    message: str


@dataclass(eq=False)
class MetaSPResult:
    """A fitted shared subspace and the per-task heads.

    Attributes
    ----------
    B : ndarray of shape (s, d)
        Orthonormal basis (rows) of the shared subspace: the top-s right singular vectors.
    W : ndarray of shape (T, s)
        Task heads: task ``t`` has coefficients ``theta_t = W[t] @ B``.
    Theta : ndarray of shape (T, d)
        The rank-s coefficient matrix ``W @ B``.
    singular_values : ndarray of shape (s,)
        Singular values of ``Theta``, descending.
    n_iter : int
        Iterations run.
    status : {"converged", "max_iter", "stalled", "diverged"}
        Why the solver stopped; "stalled": neither the loss nor the change improved any more.
    history : dict of str to ndarray
        One entry per iteration: ``"loss"`` (mean over tasks of the mean squared residual of the
        new iterate), ``"step"``, ``"rel_change"`` (``||Theta^{k+1} - Theta^k||_F /
        ||Theta^{k+1}||_F``), ``"sin_angle"`` when ``reference_B`` was given, and
        ``"svd_steps"`` (subspace-iteration steps of the truncated SVD; C++ solver only),
        ``"beta"`` (conjugacy coefficient, 0 on a restart; with ``accel="cg"``), ``"phase"``
        (``"iht"`` for hard thresholding, ``"polish"`` for least squares; ``step`` is NaN
        there), and ``"start_loss"`` (final loss of each start).
    diagnostics : list of Diagnostic
        Failure signatures found in the fit (empty for a clean fit); each also raised a
        :class:`DiagnosticWarning`.
    """

    B: np.ndarray
    W: np.ndarray
    Theta: np.ndarray
    singular_values: np.ndarray
    n_iter: int
    status: str
    history: dict = field(default_factory=dict)
    diagnostics: list = field(default_factory=list)

    @property
    def rank(self) -> int:
        """Dimension s of the shared subspace."""
        return self.B.shape[0]

    @property
    def n_features(self) -> int:
        """Number of features d."""
        return self.B.shape[1]

    def _check_design(self, X, name: str = "X") -> np.ndarray:
        X = np.asarray(_numeric_array(X, name), dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must be 2-D with d = {self.n_features} columns; got shape {X.shape}"
            )
        _check_finite(X, name)
        return X

    def adapt(self, X, y, ridge: float = 0.0) -> np.ndarray:
        r"""Fit the head of a new task in the learned subspace.

        Solves

        .. math:: \hat w = \arg\min_w \|y - X B^\top w\|_2^2 + \text{ridge}\,\|w\|_2^2 .

        With ``ridge=0`` this is least squares, and the minimum-norm solution when the task has
        fewer samples than ``s`` (or ``X B^T`` is rank deficient).

        Parameters
        ----------
        X : array_like of shape (m, d)
            Samples of the new task; a handful is enough (``m >= s`` for a unique solution).
        y : array_like of shape (m,)
        ridge : float, default 0.0
            Non-negative ridge strength; use it when ``m`` is smaller than or close to ``s``.

        Returns
        -------
        w : ndarray of shape (s,)
            The head; predict with :meth:`predict`.
        """
        X = self._check_design(X)
        y = np.asarray(_numeric_array(y, "y"), dtype=np.float64)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X; got {y.shape}")
        if X.shape[0] == 0:
            raise ValueError("the new task has no samples")
        _check_finite(y, "y")
        if not is_real(ridge) or not (np.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be a non-negative finite number; got {ridge!r}")
        features = X @ self.B.T
        if ridge == 0:
            return np.linalg.lstsq(features, y, rcond=None)[0]
        gram = features.T @ features + ridge * np.eye(self.rank)
        return np.linalg.solve(gram, features.T @ y)

    def predict(self, X, w) -> np.ndarray:
        """Predictions ``X @ B.T @ w`` for a task with head ``w`` (from :meth:`adapt` or ``W[t]``).

        Parameters
        ----------
        X : array_like of shape (m, d)
        w : array_like of shape (s,)

        Returns
        -------
        ndarray of shape (m,)
        """
        X = self._check_design(X)
        w = np.asarray(_numeric_array(w, "w"), dtype=np.float64)
        if w.shape != (self.rank,):
            raise ValueError(f"w must have shape ({self.rank},); got {w.shape}")
        _check_finite(w, "w")
        return X @ (self.B.T @ w)

    def __repr__(self) -> str:
        T, d = self.Theta.shape
        return (
            f"MetaSPResult(T={T}, d={d}, s={self.rank}, status={self.status!r}, "
            f"n_iter={self.n_iter}, loss={self.history['loss'][-1]:.4g})"
            if len(self.history.get("loss", ()))
            else f"MetaSPResult(T={T}, d={d}, s={self.rank}, status={self.status!r}, n_iter=0)"
        )


def warn_about_status(result: MetaSPResult, adaptive: bool, step: float, tol: float) -> None:
    """Turn a bad stop into a warning that says what to change."""
    if result.status == "diverged":
        loss = result.history["loss"]
        if not len(loss):
            advice = "The loss overflowed at the first step: rescale X and y (standardise them)."
        elif adaptive:
            advice = (
                "The adaptive step should not diverge: check that the features are on comparable "
                "scales (standardise them) and that the rank s is not larger than the data support."
            )
        else:
            advice = (
                f"The fixed step {step:g} is too large for these tasks: use step='auto' (no "
                f"tuning needed) or a smaller step such as {step / 4:g}."
            )
        last = f" (loss {loss[-1]:.3g} at the last iterate)" if len(loss) else ""
        warnings.warn(
            f"Meta-SP diverged after {result.n_iter} iterations{last}. {advice} The returned "
            "result is the last finite iterate; do not use it.",
            DivergenceWarning,
            stacklevel=3,
        )
    elif result.status == "stalled":
        warnings.warn(
            f"Meta-SP stalled after {result.n_iter} iterations: neither the loss nor the change "
            "improved any more. Use step='auto' with the default polish (refine='auto'), or try "
            "n_starts=5.",
            ConvergenceWarning,
            stacklevel=3,
        )
    elif result.status == "max_iter" and tol > 0:
        change = result.history["rel_change"][-1]
        warnings.warn(
            f"Meta-SP stopped at max_iter={result.n_iter} with relative change {change:.2g} > "
            f"tol={tol:g}; increase max_iter"
            + ("" if adaptive else ", or use step='auto', which usually needs fewer iterations")
            + ".",
            ConvergenceWarning,
            stacklevel=3,
        )


def warn_about_diagnostics(result: MetaSPResult) -> None:
    """One warning with every finding's sentence (a diverged fit has its own warning)."""
    if result.diagnostics and result.status != "diverged":
        warnings.warn(
            "Meta-SP: " + " ".join(finding.message for finding in result.diagnostics),
            DiagnosticWarning,
            stacklevel=3,
        )
