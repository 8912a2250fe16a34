"""What a Meta-SP fit returns, and how it reports a fit that did not go well."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _io
from ._arrays import check_finite, is_real, numeric_array
from ._prior import head_prior_in_data_units
from ._tasks import as_tasks

__all__ = ["ConvergenceWarning", "DiagnosticWarning", "DivergenceWarning", "MetaSPResult", "load"]


class ConvergenceWarning(UserWarning):
    """The solver stopped at ``max_iter`` before reaching ``tol``."""


class DivergenceWarning(RuntimeWarning):
    """The iteration diverged; the result is the last finite iterate and should not be used."""


class DiagnosticWarning(ConvergenceWarning):
    """The fit shows a known failure signature; ``result.diagnostics`` says which and what to do.

    A kind of :class:`ConvergenceWarning`: code that silences those for fits it makes on
    purpose with a wrong rank (rank selection) silences these too.
    """


@dataclass(eq=False)
class MetaSPResult:
    """A fitted shared subspace and the per-task heads.

    Attributes
    ----------
    B : ndarray of shape (s, d)
        Orthonormal basis (rows) of the shared subspace: the top-s right singular vectors.
    W : ndarray of shape (T, s)
        Task heads: task ``t`` has coefficients ``theta_t = W[t] @ B``. With random heads
        (:func:`metasp.fit`'s default), their posterior means, shrunk towards the heads'
        common prior; with fixed heads, least squares.
    Theta : ndarray of shape (T, d)
        The rank-s coefficient matrix ``W @ B``.
    singular_values : ndarray of shape (s,)
        Singular values of ``Theta``, descending.
    n_iter : int
        Iterations run.
    status : {"converged", "max_iter", "stalled", "diverged"}
        Why the solver stopped; "stalled": the loss stopped improving measurably (by less
        than 1e-5 of its value over 10 polish sweeps, or not at all) before ``tol`` was met.
    history : dict of str to ndarray
        One entry per iteration: ``"loss"`` (mean over tasks of the mean squared residual of the
        new iterate), ``"step"`` (in the data's units; the largest float64 where X is so small,
        below about 1e-154, that the step is beyond float64), ``"rel_change"`` (``||Theta^{k+1} - Theta^k||_F /
        ||Theta^{k+1}||_F``), ``"sin_angle"`` when ``reference_B`` was given,
        (C++ solver only) ``"svd_steps"`` (subspace-iteration steps of the truncated SVD),
        ``"seconds"`` and ``"svd_seconds"`` (wall-clock time of the iteration and of its
        truncated SVD, 0 in the polish),
        ``"beta"`` (conjugacy coefficient, 0 on a restart; with ``accel="cg"``), ``"phase"``
        (``"iht"`` for hard thresholding, ``"polish"`` for least squares, ``step`` is NaN
        there; ``"random_heads"`` for the L-BFGS iterations of the random-heads fit), and
        ``"start_loss"`` (final loss of each start; of its last finite iterate for a start that
        diverged, which is never chosen). With random heads, ``"loss"`` is taken
        at the posterior heads, ``"marginal_nll"`` is the negative log marginal likelihood per
        sample (less log(2 pi) / 2), and ``"noise_candidates"`` and ``"holdout_score"`` (not
        per iteration) are the noise variances tried, as shares of the mean squared target,
        and their held-out tasks' negative log likelihood per sample (empty where the noise
        was fitted by maximum likelihood).
    metadata : dict
        Free-form, JSON-serialisable information kept with the model by :meth:`save` (for
        example feature names and training options); empty after :func:`metasp.fit`.
    head_mean : ndarray of shape (s,) or None
        Mean of the Gaussian prior on task heads used by :meth:`adapt` (``prior="empirical"``);
        set by :meth:`fit_prior`, which :func:`metasp.fit` and :func:`metasp.polish` call on the
        training tasks (and leave unset, with the diagnostic ``"prior_out_of_range"``, where the
        data's scale puts the prior beyond float64).
    head_cov : ndarray of shape (s, s) or None
        Covariance of that prior.
    noise_variance : float or None
        Noise variance of the training tasks (maximum marginal likelihood, from the training
        residuals), set by :meth:`fit_prior`; at least 1e-12 times the targets' mean square
        (1e-12 where every target is 0), so that a perfect fit has a usable prior.
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
    metadata: dict = field(default_factory=dict)
    head_mean: np.ndarray | None = None
    head_cov: np.ndarray | None = None
    noise_variance: float | None = None
    diagnostics: list = field(default_factory=list)

    @property
    def rank(self) -> int:
        """Dimension s of the shared subspace."""
        return self.B.shape[0]

    @property
    def n_features(self) -> int:
        """Number of features d."""
        return self.B.shape[1]

    def _checked_features(self, X, name: str = "X") -> np.ndarray:
        X = np.asarray(numeric_array(X, name), dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must be 2-D with d = {self.n_features} columns; got shape {X.shape}"
            )
        check_finite(X, name)
        return X

    def adapt(self, X, y, prior=None, ridge=None) -> np.ndarray:
        r"""Fit the head of a new task in the learned subspace.

        With features :math:`Z = X B^\top` (m x s), the three priors give

        - ``"empirical"`` (default): the posterior mean under the Gaussian prior
          :math:`w \sim N(\mu, \Sigma)` learned from the training tasks (``head_mean``,
          ``head_cov``) with noise variance :math:`\sigma^2` (``noise_variance``), see
          :meth:`fit_prior`:

          .. math:: \hat w = (Z^\top Z + \sigma^2 \Sigma^{-1})^{-1}
                    (Z^\top y + \sigma^2 \Sigma^{-1} \mu).

          With few samples the head shrinks toward the typical training head; with many it
          approaches least squares.
        - ``"ridge"``: :math:`\hat w = \arg\min_w \|y - Z w\|_2^2 + \text{ridge}\,\|w\|_2^2`.
        - ``"none"``: least squares, as in the paper; the minimum-norm solution when the task
          has fewer samples than ``s`` (or ``Z`` is rank deficient).

        Parameters
        ----------
        X : array_like of shape (m, d)
            Samples of the new task; a handful is enough.
        y : array_like of shape (m,)
            Targets of the new task.
        prior : {"empirical", "ridge", "none"} or None, default None
            ``None`` means ``"ridge"`` when ``ridge`` is given and ``"empirical"`` otherwise.
        ridge : float, optional
            Non-negative ridge strength, for ``prior="ridge"`` (``0`` is least squares).

        Returns
        -------
        w : ndarray of shape (s,)
            The head; predict with :meth:`predict`.

        Raises
        ------
        ValueError
            For ``prior="empirical"`` on a result without a head prior (a result built by hand
            or by a baseline): call :meth:`fit_prior` with the training tasks first.
        FloatingPointError
            Where the head is beyond the float64 range (targets far larger than the features
            can explain).
        """
        X = self._checked_features(X)
        y = np.asarray(numeric_array(y, "y"), dtype=np.float64)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X; got {y.shape}")
        if X.shape[0] == 0:
            raise ValueError("the new task has no samples")
        check_finite(y, "y")
        if prior is None:
            prior = "empirical" if ridge is None else "ridge"
        if prior not in ("empirical", "ridge", "none"):
            raise ValueError(f"prior must be 'empirical', 'ridge' or 'none'; got {prior!r}")
        if prior == "ridge":
            if ridge is None:
                raise ValueError("prior='ridge' needs a strength: pass ridge=<non-negative float>")
            if not is_real(ridge) or not (np.isfinite(ridge) and ridge >= 0):
                raise ValueError(f"ridge must be a non-negative finite number; got {ridge!r}")
        elif ridge is not None:
            raise ValueError(f"ridge={ridge!r} only applies with prior='ridge'; "
                             f"got prior={prior!r}")
        if prior == "empirical" and (self.head_mean is None or self.head_cov is None
                                     or self.noise_variance is None):
            raise ValueError(
                "this result has no head prior (head_mean, head_cov, noise_variance): call "
                "result.fit_prior(Xs, ys) with the training tasks first, or use "
                "prior='ridge' or prior='none'"
            )
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            features = X @ self.B.T
            if prior == "empirical":
                # Whitened by the prior, w = mu + L v with Sigma = L L^T: a ridge problem in v
                # of strength sigma^2, exact even where Z^T Z + sigma^2 Sigma^-1 is singular
                # in float64.
                root = np.linalg.cholesky(self.head_cov)
                v = _ridge_solve(features @ root, y - features @ self.head_mean,
                                 float(self.noise_variance))
                w = self.head_mean + root @ v
            else:
                w = _ridge_solve(features, y, 0.0 if prior == "none" else float(ridge))
        return _finite_or_raise(w, "the head", X, y)
    def fit_prior(self, Xs, ys=None, *, max_iter=100, tol=1e-5) -> MetaSPResult:
        r"""Learn the Gaussian prior on task heads used by ``adapt(prior="empirical")``.

        With the subspace ``B`` fixed, the training tasks are modelled as
        :math:`w_t \sim N(\mu, \Sigma)`, :math:`y_t = X_t B^\top w_t + \varepsilon_t`,
        :math:`\varepsilon_t \sim N(0, \sigma^2 I)`, and :math:`(\mu, \Sigma, \sigma^2)` are
        estimated by maximum marginal likelihood: EM accelerated by SQUAREM, started from
        per-task least squares in the subspace. Unlike the raw covariance of ``W``, this
        removes the estimation noise of each training head from :math:`\Sigma`, so that new
        heads are shrunk as much as the data warrant. The variances are floored at 1e-12 times
        the targets' mean square (1e-12 where every target is 0): zero residuals, a perfect
        fit, are valid data. The prior depends on ``B`` and the data
        only, not on ``W``, so results of different solvers with the same subspace get the same
        prior.
        :func:`metasp.fit` calls it itself; call it on results from other solvers (for example
        ``metasp.baselines``).

        Parameters
        ----------
        Xs : tasks in any form accepted by :func:`metasp.fit`
            The tasks the result was fitted on, in the order of the rows of ``W``.
        ys : list of array_like, array_like (T, m), or None
            Their targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
        max_iter : int, default 100
            Maximum number of EM steps (each accelerated iteration takes three).
        tol : float, default 1e-5
            Stop when the relative change of the parameters over an accelerated iteration
            falls below ``tol``.

        Returns
        -------
        MetaSPResult
            ``self``, with ``head_mean``, ``head_cov`` and ``noise_variance`` set.

        Raises
        ------
        FloatingPointError
            Where the prior is beyond the float64 range in the data's units (targets near
            1e-160, say: their noise variance would be near 1e-320).
        """
        tasks = as_tasks(Xs, ys)
        if tasks.n_features != self.n_features:
            raise ValueError(f"the tasks have {tasks.n_features} features but the result has "
                             f"d = {self.n_features}")
        if tasks.n_tasks != self.W.shape[0]:
            raise ValueError(f"the result has heads for {self.W.shape[0]} tasks but "
                             f"{tasks.n_tasks} tasks were given: pass the training tasks")
        mean, cov, noise = head_prior_in_data_units(tasks, self.B, max_iter, tol)
        self.head_mean, self.head_cov, self.noise_variance = mean, cov, noise
        return self

    def predict(self, X, w) -> np.ndarray:
        """Predictions ``X @ B.T @ w`` for a task with head ``w`` (from :meth:`adapt` or ``W[t]``).

        Parameters
        ----------
        X : array_like of shape (m, d)
        w : array_like of shape (s,)

        Returns
        -------
        ndarray of shape (m,)

        Raises
        ------
        FloatingPointError
            Where a prediction is beyond the float64 range.
        """
        X = self._checked_features(X)
        w = np.asarray(numeric_array(w, "w"), dtype=np.float64)
        if w.shape != (self.rank,):
            raise ValueError(f"w must have shape ({self.rank},); got {w.shape}")
        check_finite(w, "w")
        with np.errstate(over="ignore", invalid="ignore"):
            prediction = X @ (self.B.T @ w)
        return _finite_or_raise(prediction, "the prediction", X, w)

    def save(self, path):
        """Save to one ``.npz`` file (arrays plus JSON metadata, no pickle); read it with
        :func:`metasp.load`.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write, used exactly as given (``.npz`` is the customary suffix). An existing
            file is replaced only once the new one is complete.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        return _io.save(self, path)

    def __repr__(self) -> str:
        T, d = self.Theta.shape
        return (
            f"MetaSPResult(T={T}, d={d}, s={self.rank}, status={self.status!r}, "
            f"n_iter={self.n_iter}, loss={self.history['loss'][-1]:.4g})"
            if len(self.history.get("loss", ()))
            else f"MetaSPResult(T={T}, d={d}, s={self.rank}, status={self.status!r}, n_iter=0)"
        )


def load(path) -> MetaSPResult:
    """Read a model written by :meth:`MetaSPResult.save`.

    The file is read without pickle, so loading a model cannot run code, and every size in it
    is checked before memory is allocated for it, so a damaged or hostile file cannot exhaust
    memory.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    MetaSPResult
        The saved result, with its ``metadata``.

    Raises
    ------
    ValueError
        When the file is corrupt or truncated, is not a metasp model, declares sizes it does
        not hold or far beyond what it holds, holds an invalid field (for example a NaN,
        infinite or negative ``noise_variance``), or was written by a newer metasp in a format
        version this one cannot read.
    FileNotFoundError
        When there is no file at ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import metasp
    >>> X, y, B, W = metasp.datasets.make_hps(T=50, m=10, d=8, s=2, random_state=0)
    >>> result = metasp.fit(X, y, 2, random_state=0)
    >>> result.metadata["note"] = "simulated"
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = result.save(os.path.join(folder, "model.npz"))
    ...     loaded = metasp.load(path)
    >>> bool((loaded.B == result.B).all()), loaded.status, loaded.metadata
    (True, 'converged', {'note': 'simulated'})
    """
    return _io.load(path, MetaSPResult)


def make_result(out, args, result_class=MetaSPResult) -> MetaSPResult:
    """A MetaSPResult (or ``result_class``) from the ``_core.SolveResult`` of ``_core.solve``
    (or a run of :mod:`metasp._hard_thresholding`, which has the same attributes)."""
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
    return result_class(
        B=out.B, W=out.W, Theta=out.Theta, singular_values=out.singular_values,
        n_iter=out.n_iter, status=out.status, history=history,
    )


def _ridge_solve(A: np.ndarray, b: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_w ||b - A w||^2 + ridge ||w||^2, minimum-norm for ``ridge=0``, from the SVD
    A = U S V^T as V S / (S^2 + ridge) U^T b: no normal equations, so neither a singular
    A^T A + ridge I nor the overflow of S^2 gets in the way. Singular values below
    lstsq's cutoff (eps max(m, s) S_max) count as 0."""
    U, S, Vt = np.linalg.svd(A, full_matrices=False)
    keep = S > np.finfo(float).eps * max(A.shape) * S.max(initial=0.0)
    S = S[keep]
    # S / (S^2 + ridge), written so that neither S^2 nor ridge / S can make it NaN.
    gain = 1.0 / (S + ridge / S)
    return Vt[keep].T @ (gain * (U[:, keep].T @ b))


def _finite_or_raise(values: np.ndarray, what: str, *inputs) -> np.ndarray:
    if np.isfinite(values).all():
        return values
    largest = ", ".join(f"{np.abs(a).max(initial=0.0):.3g}" for a in inputs)
    raise FloatingPointError(
        f"{what} is beyond the float64 range (largest |entries| of the inputs: {largest}): "
        "rescale X or y by a power of ten towards 1")


# B B^T may differ from the identity by this much (rounding of a QR or an SVD) in a result.
ORTHONORMAL_TOL = 1e-8


def checked(result: MetaSPResult) -> MetaSPResult:
    """``result``, after the check every fitted result passes before it is returned (fit,
    polish, the baselines, the reference): its arrays finite and ``B`` orthonormal, whatever
    its status. A result that fails it is never returned with a status of success; this raises
    FloatingPointError instead, saying what is wrong."""
    arrays = {"B": result.B, "W": result.W, "Theta": result.Theta,
              "singular_values": result.singular_values}
    if result.head_mean is not None:
        arrays.update(head_mean=result.head_mean, head_cov=result.head_cov,
                      noise_variance=result.noise_variance)
    bad = [name for name, value in arrays.items() if not np.isfinite(value).all()]
    if bad:
        raise FloatingPointError(
            f"the fit (status {result.status!r}) produced {', '.join(bad)} with NaN or inf: its "
            f"arithmetic left the float64 range. Standardise X and y (divide them by their "
            f"standard deviations) and fit again")
    B = np.asarray(result.B, dtype=np.float64)
    error = float(np.abs(B @ B.T - np.eye(B.shape[0])).max()) if B.size else 0.0
    if not error <= ORTHONORMAL_TOL:
        norms = np.linalg.norm(B, axis=1)
        raise FloatingPointError(
            f"the fit (status {result.status!r}) produced a B whose rows are not orthonormal "
            f"(row norms {norms.min():.3g} to {norms.max():.3g}, B B^T off the identity by "
            f"{error:.3g}): its arithmetic under- or overflowed. Standardise X and y and fit "
            f"again")
    return result


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
        phase = result.history.get("phase", ())
        if len(phase) and phase[-1] == "polish":
            advice = (
                "the least-squares polish no longer lowered the loss measurably (by less than "
                "1e-5 of it over 10 sweeps) while the coefficients still moved: the data barely "
                "determine some direction of the rank-s subspace. The fit is usable; a smaller "
                "rank (see metasp.select_rank) is better determined."
            )
        else:
            advice = (
                "neither the loss nor the change improved any more. Use step='auto' with the "
                "default polish (polish='auto'), or try n_starts=5."
            )
        warnings.warn(
            f"Meta-SP stalled after {result.n_iter} iterations: {advice}",
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
