"""Meta Subspace Pursuit in plain NumPy with an exact SVD.

This is the oracle the compiled solver is tested against and the baseline of the benchmarks.
It follows the same algorithm, stopping rule and bookkeeping as :func:`metasp.fit`, written for
clarity rather than speed: every iteration forms (N, d) temporaries and a full thin SVD.
"""

from __future__ import annotations

import numpy as np

from . import _prior
from ._arrays import canonical_factors
from ._hard_thresholding import best_start
from ._polish import DenseNewton, finished_system, polish_sweeps
from ._postprocess import Passes, postprocess
from ._result import MetaSPResult, make_result
from ._tasks import Tasks
from ._validation import check_fit_arguments, renamed_refine, rescaled_arguments
from .kernels import (
    BasisSystem,
    GradientPass,
    MarginalPass,
    NewtonTerms,
    TaskHeads,
    TaskStatistics,
    TruncatedSVD,
)

__all__ = ["basis_system_sums", "curvature", "fit", "fit_head_prior", "gradient",
           "head_prior_em_step", "marginal_pass", "newton_product", "newton_terms",
           "task_heads", "task_statistics", "truncated_svd"]


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


def task_statistics(tasks: Tasks, B: np.ndarray, *, heads=None) -> TaskStatistics:
    """Per-task statistics in the row space of ``B``, a block of rows at a time; see
    :func:`metasp.kernels.task_statistics`."""
    s, T = B.shape[0], tasks.n_tasks
    gram, cross, squares = np.empty((T, s, s)), np.empty((T, s)), np.empty(T)
    offsets = tasks.offsets
    # Blocks of rows: the temporaries stay far below the size of X, which is never copied.
    rows_per_block = max(1, 2**17 // (tasks.n_features + s * s + s + 1))
    first = 0
    while first < T:
        last = int(np.searchsorted(offsets, offsets[first] + rows_per_block, side="right")) - 1
        last = min(max(last, first + 1), T)
        rows = slice(offsets[first], offsets[last])
        Z, y = tasks.X[rows] @ B.T, tasks.y[rows]
        starts = offsets[first:last] - offsets[first]
        gram[first:last] = np.add.reduceat(Z[:, :, None] * Z[:, None, :], starts, axis=0)
        cross[first:last] = np.add.reduceat(Z * y[:, None], starts, axis=0)
        squares[first:last] = np.add.reduceat(y * y, starts)
        first = last
    G = None if heads is None else gradient(tasks, heads @ B).G
    return TaskStatistics(gram, cross, squares, G)


def marginal_pass(tasks: Tasks, U: np.ndarray, noise: float) -> MarginalPass:
    """The random-heads model's deviance, gradient and posterior heads with (N, s) temporaries
    and batched s x s inverses; see :func:`metasp.kernels.marginal_pass`."""
    s = U.shape[1]
    starts, sizes = tasks.offsets[:-1], tasks.task_sizes
    Z = tasks.X @ U
    gram = np.add.reduceat(Z[:, :, None] * Z[:, None, :], starts, axis=0)
    cross = np.add.reduceat(Z * tasks.y[:, None], starts, axis=0)
    squares = np.add.reduceat(tasks.y**2, starts)
    precision = np.eye(s) + gram / noise
    sign, log_det = np.linalg.slogdet(precision)
    if np.any(sign <= 0) or not np.all(np.isfinite(log_det)):
        return MarginalPass(np.inf, np.zeros_like(U), np.nan, np.zeros((tasks.n_tasks, s)),
                            np.zeros(tasks.n_tasks))
    P = np.linalg.inv(precision)
    heads = np.einsum("tab,tb->ta", P, cross) / noise
    explained = np.einsum("ta,ta->t", cross, heads)
    deviance = np.sum((squares - explained) / noise + log_det) + tasks.n_samples * np.log(noise)
    residual = squares - 2 * explained + np.einsum("ta,tab,tb->t", heads, gram, heads)
    expected = residual.sum() + np.einsum("tab,tba->", gram, P)
    second = P + heads[:, :, None] * heads[:, None, :]
    rows = tasks.task_of_row
    R = np.einsum("na,nab->nb", Z, second[rows]) - tasks.y[:, None] * heads[rows]
    gradient = 2 * (tasks.X.T @ R) / noise
    return MarginalPass(float(deviance), gradient, float(expected), heads, residual / sizes)


def head_prior_em_step(params, statistics, n, floor, block=None):
    """One EM step of the head prior from ``params = (mean, cov, noise)``: returns (new params,
    log-likelihood of ``params`` up to its constant); the compiled step of
    :meth:`metasp.MetaSPResult.fit_prior`, over blocks of ``block`` tasks."""
    gram, cross, squares = statistics[:3]
    mean, cov, noise = params
    T, s = cross.shape
    block = block or max(1, 2**14 // (s * s))
    cov_inv = np.linalg.inv(cov)
    shift = cov_inv @ mean
    sum_mean, sum_outer, sum_cov = np.zeros(s), np.zeros((s, s)), np.zeros((s, s))
    sum_residual = log_det = quadratic = 0.0
    for first in range(0, T, block):
        part = slice(first, first + block)
        precision = gram[part] / noise
        precision += cov_inv
        posterior_cov = np.linalg.inv(precision)
        rhs = cross[part] / noise + shift
        posterior_mean = np.einsum("tsr,tr->ts", posterior_cov, rhs)
        sum_mean += posterior_mean.sum(axis=0)
        sum_outer += posterior_mean.T @ posterior_mean
        sum_cov += posterior_cov.sum(axis=0)
        sum_residual += float(
            _prior.residual_sums(posterior_mean, gram[part], cross[part], squares[part]).sum()
            + np.einsum("tsr,tsr->", gram[part], posterior_cov))
        log_det += float(np.linalg.slogdet(precision)[1].sum())
        quadratic += float(squares[part].sum() / noise - np.einsum("ts,ts->", rhs,
                                                                    posterior_mean))
    # y_t ~ N(Z_t mu, noise I + Z_t Sigma Z_t^T): determinant lemma and completed square.
    log_likelihood = -0.5 * (quadratic + T * float(mean @ shift) + n * np.log(noise)
                             + T * float(np.linalg.slogdet(cov)[1]) + log_det)
    new_mean = sum_mean / T
    new_cov = (sum_outer + sum_cov) / T - np.outer(new_mean, new_mean)
    new_cov = (new_cov + new_cov.T) / 2 + floor * np.eye(s)
    new_noise = max(sum_residual / n, floor)
    return (new_mean, new_cov, new_noise), log_likelihood


def fit_head_prior(statistics, n, max_iter=100, tol=1e-5):
    """The head prior (mean, cov, noise variance) of :meth:`metasp.MetaSPResult.fit_prior`
    from the tasks' statistics and their number of samples ``n``, with the NumPy EM step."""
    return _prior.fit_head_prior(statistics, n, max_iter, tol, em_step=head_prior_em_step)


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
    """Meta-SP in NumPy: same signature, algorithm and result as :func:`metasp.fit`.

    ``n_jobs`` is validated but unused: the SVD is exact and NumPy's BLAS chooses its own
    threads; ``random_state`` only draws the extra starts. ``history`` has no ``"svd_steps"``,
    ``"seconds"`` or ``"svd_seconds"``.
    """
    polish = renamed_refine(refine, polish)
    given = check_fit_arguments(
        Xs, ys, s, step, init, max_iter, tol, n_jobs, random_state, reference_B,
        available_threads=1, accel=accel, polish=polish, n_starts=n_starts, sin_tol=sin_tol,
    )
    # Data of extreme scale are fitted scaled by powers of two, as metasp.fit fits them.
    args, scale = rescaled_arguments(given)
    best = best_start(args, _TasksInMemory(args.tasks))
    return postprocess(make_result(best, args), given, args, scale,
                       Passes(task_statistics, gradient, head_prior_em_step))


def _curvature_pair(tasks: Tasks, A: np.ndarray, D: np.ndarray):
    """Sums over tasks of ||X_t a_t||^2/m_t, <X_t a_t, X_t d_t>/m_t, ||X_t d_t||^2/m_t."""
    starts, sizes = tasks.offsets[:-1], tasks.task_sizes
    u = np.einsum("ij,ij->i", tasks.X, np.repeat(A, sizes, axis=0))
    v = np.einsum("ij,ij->i", tasks.X, np.repeat(D, sizes, axis=0))
    return tuple(float(np.sum(np.add.reduceat(p, starts) / sizes)) for p in (u * u, u * v, v * v))


# ---------------------------------------------------------------------------------------------
# The least-squares polish (cpp/src/polish.cpp and the files it uses), in NumPy.


def task_heads(tasks: Tasks, V: np.ndarray) -> TaskHeads:
    """Per-task least-squares heads in span(V) (minimum norm) and the per-task losses.

    Parameters
    ----------
    tasks : Tasks
    V : ndarray of shape (d, s)

    Returns
    -------
    metasp.kernels.TaskHeads
        As :func:`metasp.kernels.task_heads`.
    """
    W = np.empty((tasks.n_tasks, V.shape[1]))
    task_loss = np.empty(tasks.n_tasks)
    for t in range(tasks.n_tasks):
        X, y = tasks[t]
        Z = X @ V
        W[t] = np.linalg.lstsq(Z, y, rcond=None)[0]
        task_loss[t] = np.sum((y - Z @ W[t]) ** 2) / len(y)
    return TaskHeads(W, task_loss)


def basis_system_sums(tasks: Tasks, W: np.ndarray, *, subspace=None) -> BasisSystem:
    """Normal equations of one basis step summed over the tasks; see
    :func:`metasp.kernels.basis_system_sums` and ``basis_system_sums`` in
    cpp/src/basis_system.cpp.

    Without ``subspace``: the least-squares basis U for fixed heads W (ALS). With the
    orthonormal ``subspace`` V (W: the exact heads in span(V)): the Newton system of the
    correction D of V, heads eliminated, without the gauge penalty.

    Parameters
    ----------
    tasks : Tasks
    W : ndarray of shape (T, s)
    subspace : ndarray of shape (d, s), optional

    Returns
    -------
    metasp.kernels.BasisSystem
    """
    T, d, s = tasks.n_tasks, tasks.n_features, W.shape[1]
    V = subspace
    n = d * s
    M, rhs = np.zeros((n, n)), np.zeros(n)
    for t in range(T):
        X, y = tasks[t]
        X = X.astype(np.float64, copy=False)  # float32 X: X^T X in float64, as the C++ core
        m, w = len(y), W[t]
        S = X.T @ X / m
        if V is None:
            b = X.T @ y / m
        else:
            Z = X @ V
            g = b = X.T @ (y - Z @ w) / m
            Ainv = np.linalg.pinv(Z.T @ Z / m, rcond=1e-12, hermitian=True)
            K = Z.T @ X / m
            u = K.T @ Ainv
            S = S - u @ K
        for a in range(s):
            rhs[a * d:(a + 1) * d] += w[a] * b
            for c in range(s):
                block = w[a] * w[c] * S
                if V is not None:
                    block = (block + w[a] * np.outer(u[:, c], g) + w[c] * np.outer(g, u[:, a])
                             - Ainv[a, c] * np.outer(g, g))
                M[a * d:(a + 1) * d, c * d:(c + 1) * d] += block
    return BasisSystem(M, rhs)


def newton_terms(tasks: Tasks, W: np.ndarray, subspace: np.ndarray) -> NewtonTerms:
    """The Newton system's right-hand side and data diagonal, from its dense form.

    Parameters
    ----------
    tasks : Tasks
    W : ndarray of shape (T, s)
    subspace : ndarray of shape (d, s)

    Returns
    -------
    metasp.kernels.NewtonTerms
        As :func:`metasp.kernels.newton_terms`.
    """
    M, rhs = basis_system_sums(tasks, W, subspace=subspace)
    d, s = subspace.shape
    return NewtonTerms(rhs.reshape(s, d).T, np.diag(M).reshape(s, d).T)


def newton_product(tasks: Tasks, W: np.ndarray, subspace: np.ndarray, D: np.ndarray):
    """The tasks' terms of the Newton matrix times D, from its dense form.

    Parameters
    ----------
    tasks : Tasks
    W : ndarray of shape (T, s)
    subspace : ndarray of shape (d, s)
    D : ndarray of shape (d, s)

    Returns
    -------
    ndarray of shape (d, s)
        As :func:`metasp.kernels.newton_product`.
    """
    M, _ = basis_system_sums(tasks, W, subspace=subspace)
    d, s = subspace.shape
    return (M @ D.T.ravel()).reshape(s, d).T


class _TasksInMemory:
    """The fixed-heads solver's problem (:mod:`metasp._hard_thresholding`,
    :mod:`metasp._polish`) for tasks in memory: row blocks are (T, k) arrays, SVDs exact."""

    def __init__(self, tasks: Tasks):
        self.tasks = tasks
        self.n_samples, self.n_tasks, self.n_features = (tasks.n_samples, tasks.n_tasks,
                                                         tasks.n_features)

    def zeros(self, k):
        return np.zeros((self.n_tasks, k))

    def initial_loss(self):
        tasks = self.tasks
        return np.mean(np.add.reduceat(tasks.y**2, tasks.offsets[:-1]) / tasks.task_sizes)

    def gradient(self, Theta):
        out = gradient(self.tasks, Theta)
        return out.G, out.task_loss.mean()

    def top_subspace(self, A, s):
        return truncated_svd(A, s) if np.isfinite(np.sum(A**2)) else None

    def combine(self, A, a, B, b):
        return a * A + b * B

    def times(self, A, M):
        return A @ M

    def product(self, W, V):
        return W @ V.T

    def is_zero(self, A):
        return not np.any(A)

    def change(self, new, old):
        return np.linalg.norm(new), np.linalg.norm(new - old)

    def curvature(self, C, B):
        return curvature(self.tasks, C, B).sum()

    def line_search_sums(self, G, V, D=None):
        R = G @ V
        sums = {"projected": np.sum(R**2), "gradient": np.sum(G**2),
                "curvature": curvature(self.tasks, R, V).sum()}
        if D is None:
            return sums, None
        P = D @ V
        _, ad, dd = _curvature_pair(self.tasks, R @ V.T, P @ V.T)
        sums.update(direction=np.sum(P**2), cross=np.sum(R * P), cross_curvature=ad,
                    direction_curvature=dd)
        return sums, P

    def heads(self, V):
        W, task_loss = task_heads(self.tasks, V)
        return W, task_loss.mean()

    def canonical(self, W, U):
        return canonical_factors(W, U)

    def basis_system_sums(self, W, V=None):
        return basis_system_sums(self.tasks, W, subspace=V)

    def newton_operator(self, W, V):
        return DenseNewton(finished_system(*basis_system_sums(self.tasks, W, subspace=V), V), V)

    def relative_change(self, new, old):
        next_Theta = new[0] @ new[1].T
        norm = np.linalg.norm(next_Theta)
        return np.linalg.norm(next_Theta - old[0] @ old[1].T) / norm if norm > 0 else 0.0


def polish_path(tasks: Tasks, V0: np.ndarray, *, max_iter: int, tol: float, sin_tol: float = 0.0,
                reference_B=None, newton: bool = True, newton_solve: str = "auto") -> dict:
    """Alternating least squares with damped Newton basis steps from span(V0).

    The NumPy twin of ``metasp::polish`` (cpp/src/polish.cpp): same steps, same acceptance
    rules, same stopping rule (:func:`metasp._polish.polish_sweeps` on the tasks in memory);
    returns the same keys as ``metasp._core.polish``. ``newton_solve``: ``"auto"``,
    ``"dense"`` (Cholesky) or ``"cg"`` (:func:`newton_cg`, on the dense matrix here,
    matrix-free in C++).
    """
    out = polish_sweeps(_TasksInMemory(tasks), V0, max_iter=max_iter, tol=tol, sin_tol=sin_tol,
                        reference_B=reference_B, newton=newton, newton_solve=newton_solve)
    out["W"] = out.pop("heads")
    out["Theta"] = out["W"] @ out["B"]
    return out
