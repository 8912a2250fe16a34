"""Meta Subspace Pursuit in plain NumPy with an exact SVD.

This is the oracle the compiled solver is tested against and the baseline of the benchmarks.
It follows the same algorithm, stopping rule and bookkeeping as :func:`metasp.fit`, written for
clarity rather than speed: every iteration forms (N, d) temporaries and a full thin SVD.
"""

from __future__ import annotations

import numpy as np

from ._result import MetaSPResult, warn_about_status
from ._tasks import Tasks
from ._validation import DIVERGENCE_FACTOR, VANISHING_PROJECTION, check_fit_arguments
from .kernels import GradientPass, TruncatedSVD
from .metrics import sin_angle

__all__ = ["curvature", "fit", "gradient", "truncated_svd"]


def gradient(tasks: Tasks, Theta: np.ndarray, *, subspace=None) -> GradientPass:
    """Per-task negative gradient and loss; see :func:`metasp.kernels.gradient`."""
    sizes = tasks.task_sizes[:, None]
    residual = tasks.y - np.einsum("ij,ij->i", tasks.X, np.repeat(Theta, tasks.task_sizes, axis=0))
    starts = tasks.offsets[:-1]
    G = np.add.reduceat(tasks.X * residual[:, None], starts, axis=0) / sizes
    task_loss = np.add.reduceat(residual**2, starts) / sizes[:, 0]
    if subspace is None:
        return GradientPass(G, task_loss, None, None)
    C = G @ subspace
    return GradientPass(G, task_loss, np.sum(C**2, axis=1), curvature(tasks, C, subspace))


def curvature(tasks: Tasks, C: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Per-task ``||X_t d_t||^2 / m_t`` for the direction ``D = C B^T``; see
    :func:`metasp.kernels.curvature`."""
    direction = np.repeat(C @ B.T, tasks.task_sizes, axis=0)
    fitted = np.einsum("ij,ij->i", tasks.X, direction)
    return np.add.reduceat(fitted**2, tasks.offsets[:-1]) / tasks.task_sizes


def truncated_svd(A: np.ndarray, s: int) -> TruncatedSVD:
    """Top-s singular triplets from a full thin SVD (LAPACK); see
    :func:`metasp.kernels.truncated_svd`."""
    U, S, Vt = np.linalg.svd(A, full_matrices=False)
    V = Vt[:s].T
    return TruncatedSVD(V=V, singular_values=S[:s], W=U[:, :s] * S[:s], basis=V, n_steps=1,
                        converged=True)


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
    """Meta-SP in NumPy: same signature, algorithm and result as :func:`metasp.fit`.

    ``n_jobs`` and ``random_state`` are validated but unused: the SVD is exact and NumPy's BLAS
    chooses its own threads. ``history`` has no ``"svd_steps"``.
    """
    args = check_fit_arguments(
        Xs, ys, s, step, init, max_iter, tol, n_jobs, random_state, reference_B,
        available_threads=1,
    )
    tasks, s = args.tasks, args.s
    T, d = tasks.n_tasks, tasks.n_features
    Theta = np.zeros((T, d))
    svd = None
    history = {"loss": [], "step": [], "rel_change": [], "sin_angle": []}
    status, n_iter, initial_loss = "max_iter", 0, 0.0

    def diverging(loss):
        return not np.isfinite(loss) or loss > DIVERGENCE_FACTOR * initial_loss

    for k in range(args.max_iter):
        G, task_loss, _, _ = gradient(tasks, Theta)
        loss = task_loss.mean()
        if k == 0:
            initial_loss = loss
        else:
            history["loss"].append(loss)
            if diverging(loss):
                status = "diverged"
                break
        step = args.step
        if args.adaptive:
            # Normalized IHT: exact line search along the gradient projected on the current
            # row space V; the first V is the top-s row space of the gradient.
            V = (svd if svd is not None else truncated_svd(G, s)).V
            C = G @ V
            projected, denominator = np.sum(C**2), curvature(tasks, C, V).sum()
            if projected <= VANISHING_PROJECTION * np.sum(G**2):
                # The gradient is orthogonal to the row space: search along all of it.
                identity = np.eye(d)
                projected, denominator = np.sum(G**2), curvature(tasks, G, identity).sum()
            step = projected / denominator if denominator > 0 else 0.0
        target = Theta + step * G
        if not np.isfinite(np.sum(target**2)):
            status = "diverged"
            break
        svd = truncated_svd(target, s)
        new_Theta = svd.W @ svd.V.T
        norm = np.linalg.norm(new_Theta)
        change = np.linalg.norm(new_Theta - Theta)
        Theta, n_iter = new_Theta, k + 1
        history["step"].append(step)
        history["rel_change"].append(change / norm if norm > 0 else 0.0)
        if args.reference_B is not None:
            history["sin_angle"].append(sin_angle(svd.V.T, args.reference_B))
        if args.tol > 0 and change <= args.tol * norm:
            status = "converged"
            break

    if status != "diverged":
        history["loss"].append(gradient(tasks, Theta).task_loss.mean())
        if diverging(history["loss"][-1]):
            status = "diverged"
    if args.reference_B is None:
        del history["sin_angle"]
    if n_iter > 0:
        W, B, singular_values = svd.W, svd.V.T, svd.singular_values
    else:
        W, B, singular_values = np.zeros((T, s)), np.eye(s, d), np.zeros(s)
    result = MetaSPResult(
        B=np.ascontiguousarray(B), W=W, Theta=Theta, singular_values=singular_values,
        n_iter=n_iter, status=status, history={k: np.asarray(v) for k, v in history.items()},
    )
    warn_about_status(result, args.adaptive, args.step, args.tol)
    return result
