"""metasp.fit: Meta Subspace Pursuit with the compiled core."""

from __future__ import annotations

from . import _core
from ._result import MetaSPResult, warn_about_status
from ._validation import DIVERGENCE_FACTOR, check_fit_arguments

# Truncated-SVD accuracy inside the solver: Ritz residuals below 1e-12 of the largest
# eigenvalue of A^T A, which keeps the C++ iterates within ~1e-10 of exact-SVD iterates.
SVD_TOL = 1e-12
SVD_MAX_STEPS = 300
# ... or below this fraction of the iterate's last relative change, whichever is larger: the
# SVD need not be much more accurate than the iterate's own movement (0: always SVD_TOL).
SVD_RELATIVE_TOL = 1e-4


def fit(
    Xs,
    ys=None,
    s=None,
    *,
    step="auto",
    init="zero",
    max_iter=1000,
    tol=1e-10,
    n_jobs=None,
    random_state=None,
    reference_B=None,
) -> MetaSPResult:
    r"""Learn the subspace shared by T linear regression tasks with Meta Subspace Pursuit.

    Each task follows :math:`y_t = X_t \theta_t + \varepsilon_t` and the coefficients share an
    s-dimensional subspace: :math:`\Theta = W B` with :math:`B B^\top = I_s`. Meta-SP minimises

    .. math:: \sum_{t=1}^T \frac{1}{2 m_t} \|y_t - X_t \theta_t\|_2^2
              \quad \text{subject to} \quad \operatorname{rank}(\Theta) \le s

    by a gradient step on every task followed by rank-s hard thresholding (truncated SVD) of
    the stacked :math:`T \times d` iterate, starting from :math:`\Theta^0 = 0`.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        The design matrices; tasks may have different numbers of samples m_t. Integer and
        float32 data are converted to float64 once. A :class:`metasp.Tasks` holding C-contiguous
        float64 data is used without any copy.
    ys : list of array_like (m_t,), array_like (T, m), or None
        The targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace, ``1 <= s <= min(T, d)``.
    step : "auto" or float, default "auto"
        ``"auto"``: normalized iterative hard thresholding, an exact line search along the
        gradient projected on the current subspace (no tuning). A float ``gamma``: the paper's
        fixed step, :math:`\theta_t \leftarrow \theta_t + \frac{\gamma}{m_t} X_t^\top
        (y_t - X_t\theta_t)`; it diverges when ``gamma`` is too large for the data.
    init : {"zero"}, default "zero"
        Starting point; ``"zero"`` is the paper's :math:`\Theta^0 = 0`.
    max_iter : int, default 1000
        Maximum number of iterations.
    tol : float, default 1e-10
        Stop when :math:`\|\Theta^{k+1} - \Theta^k\|_F \le \text{tol}\,\|\Theta^{k+1}\|_F`.
        With ``tol=0`` the solver runs exactly ``max_iter`` iterations.
    n_jobs : int or None, default None
        Threads, with scikit-learn's meaning: ``None`` or ``-1`` all available (honours
        ``OMP_NUM_THREADS``), ``-2`` all but one, ``0`` is an error. Results do not depend on it.
    random_state : None, int or numpy.random.Generator, default None
        Seeds the random start of the first truncated SVD (the only randomness).
    reference_B : array_like of shape (s, d), optional
        The true subspace, in simulations: the sine of the largest principal angle to it is
        recorded in ``history["sin_angle"]`` after every iteration.

    Returns
    -------
    MetaSPResult
        ``B``, ``W``, ``Theta``, ``singular_values``, ``n_iter``, ``status``, ``history``,
        and :meth:`~MetaSPResult.adapt` / :meth:`~MetaSPResult.predict` for new tasks.

    Warns
    -----
    DivergenceWarning
        When the iteration diverged (``status == "diverged"``); the warning says what to change.
    ConvergenceWarning
        When ``max_iter`` was reached with ``tol > 0``.

    See Also
    --------
    metasp.reference.fit : The same algorithm in plain NumPy with an exact SVD (the test oracle).

    References
    ----------
    .. [1] Zhang, Liu, Zhang, "Few-shot Multi-Task Learning of Linear Invariant Features with
       Meta Subspace Pursuit", arXiv:2409.02708.
    .. [2] Tanner, Wei, "Normalized iterative hard thresholding for matrix completion",
       SIAM J. Sci. Comput. 35 (2013).

    Examples
    --------
    >>> import metasp
    >>> X, y, B, W = metasp.datasets.make_hps(T=200, m=15, d=50, s=3, random_state=0)
    >>> result = metasp.fit(X, y, 3, random_state=0)
    >>> result.status
    'converged'
    >>> bool(metasp.metrics.sin_angle(result.B, B) < 1e-6)
    True
    """
    args = check_fit_arguments(
        Xs, ys, s, step, init, max_iter, tol, n_jobs, random_state, reference_B,
        available_threads=_core.max_threads(),
    )
    tasks = args.tasks
    out = _core.solve(
        tasks.X, tasks.y, tasks.offsets, args.s, args.adaptive, args.step, args.max_iter,
        args.tol, args.n_threads, args.seed, args.reference_B, DIVERGENCE_FACTOR, SVD_TOL,
        SVD_MAX_STEPS, svd_relative_tol=SVD_RELATIVE_TOL,
    )
    history = {key: out[key] for key in ("loss", "step", "rel_change")}
    if args.reference_B is not None:
        history["sin_angle"] = out["sin_angle"]
    history["svd_steps"] = out["svd_steps"]
    result = MetaSPResult(
        B=out["B"], W=out["W"], Theta=out["Theta"], singular_values=out["singular_values"],
        n_iter=out["n_iter"], status=out["status"], history=history,
    )
    warn_about_status(result, args.adaptive, args.step, args.tol)
    return result
