"""ANIL (almost no inner loop) meta-learning for linear regression."""

from __future__ import annotations

import warnings

import numpy as np

from .. import kernels
from .._result import DivergenceWarning
from .._tasks import Tasks
from .._validation import (
    DIVERGENCE_FACTOR,
    check_count,
    check_max_iter,
    check_positive,
    check_tol,
    seed_from,
)
from ._common import (
    canonical_result,
    hessian_product,
    prepare,
    random_rows,
    task_heads,
    warn_max_iter,
    without_targets,
)


def anil(Xs, ys=None, s=None, *, order=1, inner_lr=0.1, inner_steps=3, outer_lr=0.1,
         max_iter=1000, support_fraction=0.5, tol=1e-7, random_state=None, n_jobs=None):
    r"""ANIL (almost no inner loop) meta-learning for linear regression.

    Each task's samples are split into a support and a query set. With the shared
    representation :math:`B \in \mathbb R^{s\times d}` (not constrained to be orthonormal), the
    head starts at zero and takes ``inner_steps`` gradient steps on the support loss; the outer
    step moves :math:`B` down the gradient of the mean query loss after adaptation:

    .. math:: w_t^{(0)} = 0, \quad
              w_t^{(k+1)} = w_t^{(k)} - \alpha \nabla_w \frac{1}{2 m_t^{s}}
              \|y_t^{s} - X_t^{s} B^\top w\|^2 \big|_{w_t^{(k)}}, \qquad
              \min_B \frac1T \sum_t \frac{1}{2 m_t^{q}}
              \|y_t^{q} - X_t^{q} B^\top w_t^{(\tau)}(B)\|^2 .

    ``order=2`` differentiates through the inner steps (exact meta-gradient, by reverse-mode
    differentiation written out by hand); ``order=1`` treats the adapted heads as constants
    (first-order ANIL). Each inner step and each backward step is one pass over the data in the
    C++ kernel. The returned heads are least-squares heads on all of each task's samples in the
    learned subspace (``B`` orthonormalised).

    Defaults and tuning: first-order ANIL, 1000 outer steps from a random orthonormal B, on
    3 seeds of (T=50, m=10, d=50, s=3, sigma=0.1) and 2 seeds of (T=100, m=60, d=10, s=2,
    sigma=0.01), over inner_lr in {0.05, 0.1, 0.25, 0.5}, inner_steps in {1, 3} and outer_lr in
    {0.05, 0.1, 0.25, 0.5, 1}. The defaults (0.1, 3, 0.1) gave the best median sin angle on the
    first setting (0.81; no setting did better than 0.81 there, where Meta-SP reaches 0.08) and
    0.0063 on the second (one inner step: 0.027, biased by the short adaptation). Steps of 0.25
    and more diverged on some seeds of the first setting, whose 5-sample support Gram matrices
    have norms near :math:`(1 + \sqrt{d/m})^2`. With a zero head start the adapted prediction
    is about :math:`\alpha\tau B^\top B \theta_t`, so B settles at a basis scaled by about
    :math:`1/\sqrt{\alpha\tau}`.

    Parameters
    ----------
    Xs : list of array_like (m_t, d), array_like (T, m, d), or Tasks
        Design matrices, as in :func:`metasp.fit`.
    ys : list of array_like (m_t,), array_like (T, m), or None
        Targets; ``None`` when ``Xs`` is a :class:`metasp.Tasks`.
    s : int
        Rank of the shared subspace.
    order : {1, 2}, default 1
        First-order or second-order (exact) meta-gradient.
    inner_lr : float, default 0.1
        Step size :math:`\alpha` of the inner (head) steps.
    inner_steps : int, default 3
        Inner gradient steps :math:`\tau`.
    outer_lr : float, default 0.1
        Step size of the outer gradient step on B.
    max_iter : int, default 1000
        Outer steps (full-batch: every task in every step).
    support_fraction : float, default 0.5
        Share of each task's samples in the support set (each side gets at least one sample;
        every task needs at least two).
    tol : float, default 1e-7
        Stop when the outer step changes B by less than ``tol`` relative to its norm.
    random_state : None, int or numpy.random.Generator
        Seeds the random start of B.
    n_jobs : int or None
        Threads of the C++ kernels.

    Returns
    -------
    MetaSPResult
        ``history["query_loss"]`` per outer step.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` was reached (the usual outcome: ANIL converges slowly).
    DivergenceWarning
        When the query loss overflowed (step sizes too large for the data).

    References
    ----------
    .. [1] Raghu, Raghu, Bengio, Vinyals, "Rapid learning or feature reuse? Towards
       understanding the effectiveness of MAML", ICLR 2020.
    .. [2] Collins, Mokhtari, Oh, Shakkottai, "MAML and ANIL provably learn representations",
       ICML 2022.

    Examples
    --------
    >>> import metasp
    >>> from metasp import baselines
    >>> X, y, B, W = metasp.datasets.make_hps(T=100, m=60, d=10, s=2, random_state=0)
    >>> result = baselines.anil(X, y, 2, max_iter=300, tol=0, random_state=0)  # 300 steps
    >>> result.status, bool(metasp.metrics.sin_angle(result.B, B) < 0.1)
    ('max_iter', True)
    """
    tasks, s = prepare(Xs, ys, s)
    order = check_count(order, "order")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (first-order ANIL) or 2 (exact meta-gradient); got {order}")
    alpha = check_positive(inner_lr, "inner_lr")
    steps = check_count(inner_steps, "inner_steps")
    beta = check_positive(outer_lr, "outer_lr")
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    fraction = check_positive(support_fraction, "support_fraction")
    if fraction >= 1:
        raise ValueError(f"support_fraction must be below 1; got {fraction}")
    support, query = _split_tasks(tasks, fraction)
    support_without_y = without_targets(support)
    rng = np.random.default_rng(seed_from(random_state))
    B = random_rows(rng, s, tasks.n_features)
    history = {"query_loss": []}
    status = "max_iter"
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(max_iter):
            try:
                loss, grad_B = _anil_meta_gradient(support, support_without_y, query, B, alpha,
                                                   steps, order, n_jobs)
            except FloatingPointError:  # the inner heads overflowed (kernels.gradient)
                status = "diverged"
                break
            if k == 0:
                initial_loss = loss
            if not np.isfinite(loss) or loss > DIVERGENCE_FACTOR * initial_loss:
                status = "diverged"
                break
            history["query_loss"].append(loss)
            update = beta * grad_B
            if not np.all(np.isfinite(update)):
                status = "diverged"
                break
            B = B - update
            if np.linalg.norm(update) <= tol * np.linalg.norm(B):
                status = "converged"
                break
    if status == "diverged":
        warnings.warn(
            f"anil diverged at outer step {k + 1}: reduce inner_lr or outer_lr. The result "
            "(from the last finite B) should not be used.",
            DivergenceWarning,
            stacklevel=2,
        )
    elif status == "max_iter" and tol > 0:
        warn_max_iter("anil", max_iter, "ANIL's outer loop converges slowly")
    B = np.ascontiguousarray(np.linalg.qr(B.T)[0].T)
    return canonical_result(task_heads(tasks, B), B, k + 1, status, history)


def _anil_meta_gradient(support, support_without_y, query, B, alpha, steps, order, n_jobs):
    """Mean query loss after ``steps`` inner head steps from zero, and its gradient in B.

    ``order=2`` back-propagates through the inner steps (reverse mode written out: one Hessian
    product per step); ``order=1`` treats the adapted heads as constants.
    """
    T, s = query.n_tasks, B.shape[0]
    heads, support_grads = [np.zeros((T, s))], []
    for _ in range(steps):
        support_grads.append(kernels.gradient(support, heads[-1] @ B, n_jobs=n_jobs).G)
        heads.append(heads[-1] + alpha * support_grads[-1] @ B.T)
    out = kernels.gradient(query, heads[-1] @ B, n_jobs=n_jobs)
    loss = 0.5 * out.task_loss.mean()
    grad_B = -heads[-1].T @ out.G
    if order == 2:
        head_adjoint = -out.G @ B.T
        for inner in range(steps - 1, -1, -1):
            v = head_adjoint @ B  # row t: B^T (adjoint of w_t^(inner+1))
            Hv = hessian_product(support_without_y, v, n_jobs)
            grad_B += alpha * (head_adjoint.T @ support_grads[inner] - heads[inner].T @ Hv)
            head_adjoint = head_adjoint - alpha * Hv @ B.T
    return loss, grad_B / T


def _split_tasks(tasks: Tasks, fraction: float) -> tuple[Tasks, Tasks]:
    """Support (first samples of each task) and query (the rest) sets."""
    sizes = tasks.task_sizes
    if sizes.min() < 2:
        raise ValueError("anil needs at least 2 samples in every task (a support and a query set)")
    support_sizes = np.clip(np.round(fraction * sizes).astype(np.int64), 1, sizes - 1)
    in_support = np.zeros(tasks.n_samples, dtype=bool)
    for start, size in zip(tasks.offsets[:-1], support_sizes):
        in_support[start:start + size] = True
    def subset(mask, task_sizes):
        return Tasks(tasks.X[mask], tasks.y[mask], np.concatenate([[0], np.cumsum(task_sizes)]))
    return subset(in_support, support_sizes), subset(~in_support, sizes - support_sizes)
