"""metasp.fit and metasp.polish: Meta Subspace Pursuit with the compiled core."""

from __future__ import annotations

import numpy as np

from . import _core, kernels, metrics
from ._polish import joined_history
from ._postprocess import postprocess
from ._random_heads import NEGLIGIBLE_NOISE, fit_random_heads, spectral_start
from ._result import MetaSPResult, make_result
from ._validation import (
    check_fit_arguments,
    check_polish_arguments,
    renamed_refine,
    rescaled_arguments,
)

# Each truncated SVD inside the solver stops at this fraction of the iterate's last relative
# change (or at the C++ core's SVD tolerance, whichever is larger): the core's default, read
# here so that trajectory comparisons with the exact-SVD reference can set it to 0.
SVD_RELATIVE_TOL = _core.constants["svd_relative_tol"]


def fit(
    Xs,
    ys=None,
    s=None,
    *,
    heads="auto",
    step="auto",
    accel="cg",
    polish="auto",
    init="zero",
    n_starts=1,
    max_iter=1000,
    tol=1e-10,
    sin_tol=None,
    n_jobs=None,
    random_state=None,
    reference_B=None,
    refine="deprecated",
) -> MetaSPResult:
    r"""Learn the subspace shared by T linear regression tasks with Meta Subspace Pursuit.

    Each task follows :math:`y_t = X_t \theta_t + \varepsilon_t` and the coefficients share an
    s-dimensional subspace: :math:`\Theta = W B` with :math:`B B^\top = I_s`.

    **Random heads (the default).** The heads are integrated out as random effects,
    :math:`\theta_t = U z_t` with :math:`z_t \sim N(0, I_s)`, and the subspace ``B`` (the span
    of U) maximises the marginal likelihood of
    :math:`y_t \sim N(0, X_t U U^\top X_t^\top + \sigma^2 I)`, by L-BFGS with the compiled
    :func:`metasp.kernels.marginal_pass` (two reads of X per evaluation). Heads are shrunk
    towards their common prior instead of fitted freely, which is what helps where tasks have
    few samples: free least-squares heads overfit the noise there and drag the subspace with
    them. Where the tasks' spare samples :math:`\sum_t (m_t - s)` are fewer than ten times the
    subspace's d s unknowns, the noise variance (the shrinkage) is chosen instead among a grid
    by the marginal likelihood of held-out tasks (3 folds), since its maximum-likelihood value
    can collapse to 0 there. ``W`` holds the posterior means of the heads. Where the fitted
    noise is negligible (below 1e-4 of the mean squared target), the two estimators coincide
    and the least-squares polish below finishes the fit: noiseless data are recovered exactly.

    **Fixed heads (the paper's estimator, ``heads="fixed"``).** Meta-SP minimises

    .. math:: \sum_{t=1}^T \frac{1}{2 m_t} \|y_t - X_t \theta_t\|_2^2
              \quad \text{subject to} \quad \operatorname{rank}(\Theta) \le s

    by a gradient step on every task followed by rank-s hard thresholding (truncated SVD) of
    the stacked :math:`T \times d` iterate. By default (no parameter to tune) the steps follow
    conjugate directions with an exact line search (CGIHT), and once hard thresholding has found
    the basin of the minimum a least-squares polish finishes the job: exact per-task heads
    alternated with damped Newton steps of the subspace (heads eliminated), falling back to the
    exact least-squares subspace for fixed heads (alternating least squares). The polish reaches
    the noise floor, and exact recovery without noise, in a few sweeps where hard thresholding
    alone crawls. This is the least-squares (fixed-effects) estimator: as accurate as random
    heads where tasks have many samples, and worse where they have few.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        The design matrices; tasks may have different numbers of samples m_t. float32 data
        stay float32 (half the memory traffic; arithmetic is float64 throughout, so only the
        rounding of X to float32 costs accuracy); integer and other data are converted to
        float64 once. A :class:`metasp.Tasks` holding C-contiguous float64 or float32 data is
        used without any copy; ``metasp.Tasks(..., dtype=np.float32)`` converts on purpose.
    ys : list of array_like (m_t,), array_like (T, m), or None
        The targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace, ``1 <= s <= min(T, d)``; :func:`metasp.select_rank`
        chooses it on real data.
    heads : {"auto", "random", "fixed"}, default "auto"
        ``"random"``: heads integrated out (the marginal likelihood); ``"fixed"``: least-squares
        heads, the paper's estimator; ``"auto"``: ``"random"`` unless an option of the
        fixed-heads solver below (``step``, ``accel``, ``polish``, ``n_starts``) is changed
        from its default. Those options apply to ``heads="fixed"`` only.
    step : "auto" or float, default "auto"
        ``"auto"``: an exact line search along the (conjugate) direction restricted to the
        current subspace (no tuning). A float ``gamma``: the paper's fixed step,
        :math:`\theta_t \leftarrow \theta_t + \frac{\gamma}{m_t} X_t^\top (y_t - X_t\theta_t)`;
        it diverges when ``gamma`` is too large for the data.
    accel : {"cg", None}, default "cg"
        With ``step="auto"``: ``"cg"`` for conjugate directions (CGIHT, restarted when the
        conjugacy coefficient blows up, safeguarded by halving a step that raised the loss);
        ``None`` for normalized IHT (steepest descent with the exact step). Ignored with a fixed
        step.
    polish : {"auto", "als", None}, default "auto"
        The least-squares polish after hard thresholding (:func:`metasp.polish` from the
        subspace it found). ``"auto"``: on with ``step="auto"``, off with a fixed step (the
        paper's algorithm); ``"als"``: on; ``None``: off.
    init : {"zero", "spectral"} or array_like of shape (s, d), default "zero"
        Starting point. ``"zero"``: the paper's :math:`\Theta^0 = 0` (with random heads, which
        need a subspace to start from: as ``"spectral"``). ``"spectral"``: the top-s row space
        of the stacked :math:`X_t^\top y_t / m_t` with least-squares heads. An array: its row
        space, with least-squares heads (a warm start).
    n_starts : int, default 1
        Starts to run; the second and later begin from random subspaces (drawn from
        ``random_state``), and the fit with the lowest training loss is returned.
    max_iter : int, default 1000
        Maximum number of iterations per start, hard thresholding and polish together (with the
        polish, hard thresholding takes at most half); with random heads, of L-BFGS per fit
        (each held-out fit, and the final one).
    tol : float, default 1e-10
        Stop when :math:`\|\Theta^{k+1} - \Theta^k\|_F \le \text{tol}\,\|\Theta^{k+1}\|_F`.
        The polish also stops when the loss stops decreasing. With ``tol=0`` and no polish the
        solver runs exactly ``max_iter`` iterations. With random heads: stop when an iteration
        lowers the negative log marginal likelihood per sample by less than ``tol`` times its
        size (or 1).
    sin_tol : float, optional
        With ``reference_B``: also stop once the sin angle to it is below ``sin_tol``.
    n_jobs : int or None, default None
        Threads, with scikit-learn's meaning: ``None`` or ``-1`` all available (honours
        ``OMP_NUM_THREADS``), ``-2`` all but one, ``0`` is an error; more than the processors
        available (or ``OMP_NUM_THREADS``, when larger) is capped there. Results do not depend
        on it.
    random_state : None, int or numpy.random.Generator, default None
        Seeds the random start of the first truncated SVD, the random starts and the held-out
        folds of tasks.
    reference_B : array_like of shape (s, d), optional
        The true subspace, in simulations: the sine of the largest principal angle to it is
        recorded in ``history["sin_angle"]`` after every iteration.
    refine : {"auto", "als", None}, optional
        The former name of ``polish``; still accepted with a :class:`FutureWarning` for one
        release.

    Returns
    -------
    MetaSPResult
        ``B``, ``W``, ``Theta``, ``singular_values``, ``n_iter``, ``status`` (``"converged"``,
        ``"max_iter"``, ``"stalled"`` or ``"diverged"``), ``history``, ``diagnostics``, and
        :meth:`~MetaSPResult.adapt` / :meth:`~MetaSPResult.predict` for new tasks. Always
        finite, with orthonormal ``B``; data of any scale are fitted (X and y are scaled
        internally by powers of two where their products would leave the float64 range).

    Raises
    ------
    ValueError
        For bad arguments, and for tasks whose scale is so far below the others' (X_t below
        2^-200 of the largest task's) that one float64 scale cannot hold them all.
    FloatingPointError
        Where the result itself is beyond float64 (heads of order y / X above 1e308).

    Warns
    -----
    DivergenceWarning
        When the iteration diverged (``status == "diverged"``); the warning says what to change.
    ConvergenceWarning
        When ``max_iter`` was reached with ``tol > 0``, or the iteration stalled.
    DiagnosticWarning
        When ``result.diagnostics`` found one of the known failure signatures (step too large,
        rank too small, too few samples, a direction most tasks do not see); the warning says
        what to change.

    See Also
    --------
    metasp.reference.fit : The same algorithm in plain NumPy with an exact SVD (the test oracle).
    metasp.polish : The least-squares polish alone, from a given subspace.

    References
    ----------
    .. [1] Zhang, Liu, Zhang, "Few-shot Multi-Task Learning of Linear Invariant Features with
       Meta Subspace Pursuit", arXiv:2409.02708.
    .. [2] Tanner, Wei, "Normalized iterative hard thresholding for matrix completion",
       SIAM J. Sci. Comput. 35 (2013).
    .. [3] Blanchard, Tanner, Wei, "CGIHT: conjugate gradient iterative hard thresholding for
       compressed sensing and matrix completion", Information and Inference 4 (2015).
    .. [4] Boursier, Konobeev, Flammarion, "Trace norm regularization and faster rates for
       multi-task learning with scarce data", COLT 2022 (the scarce-data benchmark).
    .. [5] Liu, Nocedal, "On the limited memory BFGS method for large scale optimization",
       Math. Programming 45 (1989).

    Examples
    --------
    >>> import metasp
    >>> X, y, B, W = metasp.datasets.make_hps(T=200, m=15, d=50, s=3, random_state=0)
    >>> result = metasp.fit(X, y, 3, random_state=0)
    >>> result.status
    'converged'
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 1e-10)
    True
    """
    polish = renamed_refine(refine, polish)
    args = check_fit_arguments(
        Xs, ys, s, step, init, max_iter, tol, n_jobs, random_state, reference_B,
        available_threads=_core.max_threads(), accel=accel, polish=polish, n_starts=n_starts,
        sin_tol=sin_tol, heads=heads,
    )
    work, scale = rescaled_arguments(args)
    tasks = work.tasks
    if args.heads == "random":
        return postprocess(_fit_random_heads(work), args, work, scale)
    out = _core.solve(*kernels.core_arrays(tasks), work.s, solve_options(work))
    return postprocess(make_result(out, work), args, work, scale)


def solve_options(args) -> _core.SolveOptions:
    """The C++ solver's options for validated fit arguments; the rest keep C++'s defaults."""
    options = _core.SolveOptions()
    options.adaptive_step, options.step = args.adaptive, args.step
    options.conjugate, options.polish = args.conjugate, args.polish
    options.max_iter, options.tol, options.sin_tol = args.max_iter, args.tol, args.sin_tol
    options.n_threads, options.seed = args.n_threads, args.seed
    options.init, options.init_B, options.starts = args.init, args.init_B, args.starts
    options.reference_B = args.reference_B
    options.svd.relative_tol = SVD_RELATIVE_TOL
    return options


def polish_options(args, reference_B=None) -> _core.PolishOptions:
    """The C++ polish's options for validated arguments (``max_iter``, ``tol``, ``n_threads``,
    ``sin_tol``); the rest keep C++'s defaults."""
    options = _core.PolishOptions()
    options.max_iter, options.tol, options.n_threads = args.max_iter, args.tol, args.n_threads
    options.sin_tol = args.sin_tol
    options.reference_B = reference_B
    return options


def _fit_random_heads(args) -> MetaSPResult:
    """The random-heads estimate (:mod:`metasp._random_heads`) as a MetaSPResult, finished by
    the least-squares polish where the fitted noise is negligible."""
    tasks, s, reference = args.tasks, args.s, args.reference_B
    start = (args.init_B if args.init == "given"
             else spectral_start(tasks, s, args.seed, args.n_threads))
    sin, reached = [], []

    def on_iteration(B):
        if reference is None:
            return False
        sin.append(metrics.sin_angle(np.linalg.qr(B.T)[0].T, reference))
        if args.sin_tol > 0 and sin[-1] <= args.sin_tol:
            reached.append(True)
        return bool(reached)

    fitted = fit_random_heads(tasks, s, start, max_iter=args.max_iter, tol=args.tol,
                              seed=args.seed, n_threads=args.n_threads,
                              on_iteration=on_iteration)
    history = fitted.history(sin if reference is not None else None)
    if fitted.noise_share < NEGLIGIBLE_NOISE and not reached:
        # Noise this small shrinks no head: both estimates coincide, and the least-squares
        # polish converges fast (and exactly on noiseless data) where L-BFGS crawls.
        out = _core.polish(*kernels.core_arrays(tasks), np.asfortranarray(fitted.U),
                           polish_options(args, reference))
        history = joined_history(history, out, reference is not None)
        return MetaSPResult(B=out["B"], W=out["W"], Theta=out["Theta"],
                            singular_values=out["singular_values"],
                            n_iter=fitted.n_iter + out["n_iter"], status=out["status"],
                            history=history)
    # Canonical form of Theta = heads U^T: orthonormal B, W with orthogonal columns.
    Q, R = np.linalg.qr(fitted.U)
    left, singular_values, right = np.linalg.svd(fitted.heads @ R.T, full_matrices=False)
    B = right @ Q.T
    W = left * singular_values
    return MetaSPResult(B=B, W=W, Theta=W @ B, singular_values=singular_values,
                        n_iter=fitted.n_iter, status=fitted.status, history=history)


def polish(Xs, ys=None, B=None, *, max_iter=100, tol=1e-10, n_jobs=None, reference_B=None):
    r"""The least-squares polish alone, started from the subspace spanned by the rows of ``B``.

    Alternates exact per-task heads in the current subspace with a damped Newton step of the
    subspace (heads eliminated; the exact least-squares subspace for fixed heads when Newton
    does not lower the loss) until the relative change is below ``tol`` or the loss stops
    decreasing. Started from the true subspace in a simulation, this is the oracle-initialised
    least-squares estimator: the floor :func:`fit` is measured against.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        The design matrices, as in :func:`fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        The targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    B : array_like of shape (s, d)
        Rows spanning the starting subspace (need not be orthonormal).
    max_iter : int, default 100
        Maximum number of sweeps.
    tol : float, default 1e-10
        Relative-change tolerance, as in :func:`fit`.
    n_jobs : int or None, default None
        Threads, as in :func:`fit`.
    reference_B : array_like of shape (s, d), optional
        Records ``history["sin_angle"]`` to it.

    Returns
    -------
    MetaSPResult
        As from :func:`fit`; ``history["phase"]`` is ``"polish"`` throughout.

    Examples
    --------
    >>> import metasp
    >>> X, y, B, W = metasp.datasets.make_hps(T=50, m=10, d=20, s=2, sigma=0.1, random_state=0)
    >>> oracle = metasp.polish(X, y, B)
    >>> oracle.status
    'converged'
    """
    args = check_polish_arguments(Xs, ys, B, max_iter, tol, n_jobs, reference_B,
                                  available_threads=_core.max_threads())
    work, scale = rescaled_arguments(args)
    tasks = work.tasks
    out = _core.polish(*kernels.core_arrays(tasks), np.asfortranarray(args.init_B.T),
                       polish_options(args, args.reference_B))
    n = out["n_iter"]
    history = {"loss": out["loss"], "rel_change": out["rel_change"],
               "phase": np.full(n, "polish"), "seconds": out["seconds"]}
    if args.reference_B is not None:
        history["sin_angle"] = out["sin_angle"]
    result = MetaSPResult(
        B=out["B"], W=out["W"], Theta=out["Theta"], singular_values=out["singular_values"],
        n_iter=n, status=out["status"], history=history,
    )
    return postprocess(result, args, work, scale)
