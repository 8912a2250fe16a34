"""Meta Subspace Pursuit in plain NumPy with an exact SVD.

This is the oracle the compiled solver is tested against and the baseline of the benchmarks.
It follows the same algorithm, stopping rule and bookkeeping as :func:`metasp.fit`, written for
clarity rather than speed: every iteration forms (N, d) temporaries and a full thin SVD.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import _core, _prior
from ._arrays import canonical_factors
from ._postprocess import Passes, postprocess
from ._result import MetaSPResult, make_result
from ._tasks import Tasks
from ._validation import check_fit_arguments, renamed_refine, rescaled_arguments
from .kernels import GradientPass, MarginalPass, TaskStatistics, TruncatedSVD
from .metrics import sin_angle

__all__ = ["curvature", "fit", "fit_head_prior", "gradient", "head_prior_em_step",
           "marginal_pass", "task_statistics", "truncated_svd"]


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
    best, start_loss, start_iter = None, [], []
    starts = [(args.init, None if args.init_B is None else args.init_B.T)]
    starts += [("given", V0) for V0 in args.starts]
    for kind, V0 in starts:
        run = _Start(args, kind, V0).run()
        loss = run.history["loss"]
        run.final_loss = loss[-1] if len(loss) else run.initial_loss
        start_loss.append(run.final_loss)  # a diverged start: its last finite iterate
        start_iter.append(run.n_iter)
        if best is None or (run.status != "diverged" and (
                best.status == "diverged" or run.final_loss < best.final_loss)):
            best = run
    best.start_loss, best.start_iter = start_loss, start_iter
    return postprocess(make_result(best, args), given, args, scale,
                       Passes(task_statistics, gradient, head_prior_em_step))


# The C++ core's constants: the polish hand-over and "stalled" patience (SolveOptions'
# defaults), the vanishing projection and the CGIHT restart and backtracking rules.
_CONSTANTS = _core.constants


def _plateau(loss, window, rtol):
    return len(loss) > window and loss[-1 - window] - loss[-1] <= rtol * abs(loss[-1])


def _stalled(loss, rel_change, patience):
    n = len(rel_change)
    if n < 2 * patience or n % patience or len(loss) < n:
        return False
    loss_before, loss_now = min(loss[:n - patience]), min(loss[n - patience:n])
    change_before, change_now = min(rel_change[:n - patience]), min(rel_change[n - patience:n])
    return loss_now >= loss_before * (1 - 1e-12) and change_now >= 0.5 * change_before


_HISTORY = ("loss", "step", "beta", "rel_change", "sin_angle", "phase")


class _Start:
    """One start: hard thresholding, then the polish; the NumPy twin of ``Start`` in
    cpp/src/solver.cpp, with the same steps under the same names. An iteration is
    :meth:`pass_over_x`, then :meth:`step_rule` (or :meth:`backtrack`, CGIHT's undo of a step
    that raised the loss), :meth:`threshold` and :meth:`stop_test`."""

    def __init__(self, args, kind, V0):
        self.args, self.kind, self.V0 = args, kind, V0
        self.tasks, self.s = args.tasks, args.s
        self.conjugate = args.adaptive and args.conjugate
        self.history = []  # one record (a dict of _HISTORY) per iteration
        self.status, self.n_iter, self.done = "max_iter", 0, False
        self.svd, self.direction = None, None
        # The last update was not a backtracking one: beta may be used.
        self.have_direction = False
        self.accepted = None  # CGIHT backtracking: (Theta, svd, loss) of the last accepted iterate
        self.retries = 0

    def _append(self, record):
        """The one place an iteration's record joins the history."""
        self.history.append(record)

    def diverging(self, loss):
        factor = _CONSTANTS["divergence_factor"]
        return not np.isfinite(loss) or loss > factor * self.initial_loss

    def start(self):
        """The loss at Theta = 0 and, unless from zero, the first iterate with least-squares
        heads in the given or spectral row space."""
        tasks, T, d = self.tasks, self.tasks.n_tasks, self.tasks.n_features
        self.Theta = np.zeros((T, d))
        self.initial_loss = np.mean(np.add.reduceat(tasks.y**2, tasks.offsets[:-1])
                                    / tasks.task_sizes)
        if self.kind == "zero":
            return
        V0 = self.V0
        if self.kind == "spectral":
            V0 = truncated_svd(gradient(tasks, self.Theta).G, self.s).V
        W0, _ = heads(tasks, V0)
        W0, V, S = canonical_factors(W0, V0)
        self.Theta = W0 @ V.T
        self.svd = TruncatedSVD(V=V, singular_values=S, W=W0, basis=V, n_steps=0, converged=True)

    def pass_over_x(self):
        """The gradient G and the loss of the current iterate."""
        self.G, task_loss, _, _ = gradient(self.tasks, self.Theta)
        return task_loss.mean()

    def step_rule(self, k, loss, record):
        """The step (fixed, the exact line search, or CGIHT's) and the step's target
        Theta + step * direction; with CGIHT the iterate it leaves is kept, for backtracking."""
        args, tasks, G = self.args, self.tasks, self.G
        conjugate = self.conjugate
        step, beta = args.step, (0.0 if conjugate else np.nan)
        if conjugate:
            self.retries = 0
            self.accepted = (self.Theta, self.svd,
                             loss if (k > 0 or self.kind != "zero") else self.initial_loss)
        if args.adaptive:
            V = (self.svd if self.svd is not None else truncated_svd(G, self.s)).V
            Cr = G @ V
            rr, gradient_norm = np.sum(Cr**2), np.sum(G**2)
            whole = rr <= _CONSTANTS["vanishing_projection"] * gradient_norm
            if whole:  # the gradient is orthogonal to the row space: search along all of it
                numerator = gradient_norm
                denominator = curvature(tasks, G, np.eye(tasks.n_features)).sum()
            else:
                numerator, denominator = rr, curvature(tasks, Cr, V).sum()
            if conjugate and self.have_direction and not whole:
                Cp = self.direction @ V
                Pr, Pp = Cr @ V.T, Cp @ V.T
                aa, ad, dd = _curvature_pair(tasks, Pr, Pp)
                b = -ad / dd if dd > 0 else np.nan
                num = rr + b * np.sum(Cr * Cp)
                den = aa + 2 * b * ad + b * b * dd
                restart = (not dd > 0 or not np.isfinite(b)
                           or abs(b) * np.sqrt(np.sum(Cp**2))
                           > _CONSTANTS["max_conjugacy"] * np.sqrt(rr)
                           or not num > _CONSTANTS["min_conjugate_share"] * rr
                           or not den > _CONSTANTS["min_conjugate_share"] * aa)
                if not restart:
                    numerator, denominator, beta = num, den, b
            step = numerator / denominator if denominator > 0 else 0.0
            if conjugate:
                self.direction = G + beta * Pp if beta != 0 else G
        record.update(step=step, beta=beta)
        return self.Theta + step * (self.direction if conjugate else G)

    def backtrack(self, record):
        """CGIHT's safeguard: the update raised the loss, so it is undone and retried with half
        the step along the same direction; returns the target as :meth:`step_rule` does."""
        self.retries += 1
        self.Theta, self.svd = self.accepted[0], self.accepted[1]
        record.update(step=0.5 * self.history[-1]["step"], beta=0.0)
        return self.Theta + record["step"] * self.direction

    def threshold(self, target, record):
        """Hard thresholding: the (exact) truncated SVD of the target and the rank-s iterate;
        fills the record's relative change and sin angle, returns (norm, change)."""
        self.svd = truncated_svd(target, self.s)
        new_Theta = self.svd.W @ self.svd.V.T
        norm = np.linalg.norm(new_Theta)
        change = np.linalg.norm(new_Theta - self.Theta)
        self.Theta = new_Theta
        reference = self.args.reference_B
        record.update(rel_change=change / norm if norm > 0 else 0.0, phase=0,
                      sin_angle=np.nan if reference is None else sin_angle(self.svd.V.T, reference))
        return norm, change

    def stop_test(self, record, norm, change):
        """Converged (sin angle or relative change), the hand-over to the polish, or stalled;
        sets the status, True: leave hard thresholding."""
        args = self.args
        if args.reference_B is not None and args.sin_tol > 0 and record["sin_angle"] <= args.sin_tol:
            self.status, self.done = "converged", True
            return True
        # A zero iterate has converged only where the gradient at it vanishes.
        stationary = (change <= args.tol * norm if norm > 0
                      else not np.any(gradient(args.tasks, np.zeros_like(self.Theta)).G))
        if args.tol > 0 and stationary:
            self.status = "converged"
            return True
        if args.polish:
            # Without the Newton step (d * s beyond dense normal equations) the polish is slow
            # ALS: hard thresholding goes further before handing over.
            slow = self.tasks.n_features * self.s > _CONSTANTS["max_dense_normal"]
            switch_tol = _CONSTANTS["switch_tol"] * (_CONSTANTS["slow_polish_switch"] if slow else 1.0)
            return (record["rel_change"] <= switch_tol
                    or _plateau([r["loss"] for r in self.history], _CONSTANTS["switch_window"],
                                switch_tol**2))
        # The current iterate's loss is known only at the next pass over X (as in C++).
        if args.tol > 0 and _stalled([r["loss"] for r in self.history],
                                     [r["rel_change"] for r in self.history + [record]],
                                     _CONSTANTS["patience"]):
            self.status = "stalled"
            return True
        return False

    def polish(self):
        """The least-squares polish from the hard-thresholding subspace, when asked for and it
        can help; its sweeps join the history as phase 1. True if it took a sweep."""
        args = self.args
        if not args.polish or self.done or self.svd is None or self.status == "diverged":
            return False
        polished = polish_path(self.tasks, self.svd.V, max_iter=args.max_iter - self.n_iter,
                               tol=args.tol, sin_tol=args.sin_tol, reference_B=args.reference_B)
        self.status = polished["status"]
        n = polished["n_iter"]
        if n == 0:
            return False
        self.n_iter += n
        for k in range(n):
            angle = polished["sin_angle"][k] if args.reference_B is not None else np.nan
            self._append({"loss": polished["loss"][k], "step": np.nan, "beta": np.nan,
                              "rel_change": polished["rel_change"][k], "sin_angle": angle, "phase": 1})
        self.Theta, self.W, self.B = polished["Theta"], polished["W"], polished["B"]
        self.singular_values = polished["singular_values"]
        return True

    def run(self):
        """The start's run, with the attributes of ``metasp._core.SolveResult``."""
        args = self.args
        self.start()
        pending = None  # the last iteration's record, until its loss is known
        iht_budget = max(1, args.max_iter // 2) if args.polish else args.max_iter
        for k in range(iht_budget):
            loss = self.pass_over_x()
            retry = (self.conjugate and k > 0 and not loss <= self.accepted[2]
                     and self.retries < _CONSTANTS["max_retries"])
            if pending is not None:
                pending["loss"] = loss
                self._append(pending)
                pending = None
                if not retry and self.diverging(loss):
                    self.status = "diverged"
                    break
            record = {}
            target = self.backtrack(record) if retry else self.step_rule(k, loss, record)
            # The directions restart after a backtracking step; a further backtracking step
            # still halves along the same direction.
            self.have_direction = self.conjugate and not retry
            if not np.isfinite(np.sum(target**2)):
                self.status = "diverged"
                break
            norm, change = self.threshold(target, record)
            self.n_iter = k + 1
            pending = record
            if self.stop_test(record, norm, change):
                break
        n_iht = self.n_iter
        if pending is not None:  # the last iterate's loss, once more over X
            pending["loss"] = gradient(self.tasks, self.Theta).task_loss.mean()
            self._append(pending)
            if self.diverging(pending["loss"]):
                self.status = "diverged"
        if not self.polish():
            self._hard_thresholding_factors()
        records = {key: np.asarray([r[key] for r in self.history], dtype=float)
                   for key in _HISTORY}
        records["phase"] = records["phase"].astype(int)
        if args.reference_B is None:
            records["sin_angle"] = np.empty(0)
        return SimpleNamespace(Theta=self.Theta, W=self.W, B=np.ascontiguousarray(self.B),
                               singular_values=self.singular_values, n_iter=self.n_iter,
                               n_iht_iter=n_iht, status=self.status,
                               initial_loss=self.initial_loss, history=records)

    def _hard_thresholding_factors(self):
        T, d, s = self.tasks.n_tasks, self.tasks.n_features, self.s
        if self.svd is None:  # stopped before the first update: Theta is still zero
            self.W, self.B, self.singular_values = np.zeros((T, s)), np.eye(s, d), np.zeros(s)
        else:
            self.W, self.B = self.svd.W, self.svd.V.T
            self.singular_values = self.svd.singular_values


def _curvature_pair(tasks: Tasks, A: np.ndarray, D: np.ndarray):
    """Sums over tasks of ||X_t a_t||^2/m_t, <X_t a_t, X_t d_t>/m_t, ||X_t d_t||^2/m_t."""
    starts, sizes = tasks.offsets[:-1], tasks.task_sizes
    u = np.einsum("ij,ij->i", tasks.X, np.repeat(A, sizes, axis=0))
    v = np.einsum("ij,ij->i", tasks.X, np.repeat(D, sizes, axis=0))
    return tuple(float(np.sum(np.add.reduceat(p, starts) / sizes)) for p in (u * u, u * v, v * v))


# ---------------------------------------------------------------------------------------------
# The least-squares polish (cpp/src/polish.cpp and the files it uses), in NumPy.


def heads(tasks: Tasks, V: np.ndarray):
    """Per-task least-squares heads in span(V) (minimum norm) and the per-task losses."""
    W = np.empty((tasks.n_tasks, V.shape[1]))
    task_loss = np.empty(tasks.n_tasks)
    for t in range(tasks.n_tasks):
        X, y = tasks[t]
        Z = X @ V
        W[t] = np.linalg.lstsq(Z, y, rcond=None)[0]
        task_loss[t] = np.sum((y - Z @ W[t]) ** 2) / len(y)
    return W, task_loss


def basis_system(tasks: Tasks, W: np.ndarray, V=None):
    """Normal equations of one basis step; see ``assemble_basis_system`` in cpp/src/basis_system.cpp.

    Without ``V``: the least-squares basis U for fixed heads W (ALS). With the orthonormal
    ``V`` (W: the exact heads in span(V)): the Newton system of the correction D of V, heads
    eliminated. Returns ``(M, rhs, scale)``; solve with :func:`solve_basis_system`.
    """
    T, d, s = tasks.n_tasks, tasks.n_features, W.shape[1]
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
    scale = max(np.mean(np.diag(M)), np.finfo(float).tiny)
    if V is not None:
        M += np.kron(np.eye(s), scale * V @ V.T)
    return M, rhs, scale


def solve_basis_system(system, d: int, s: int, shift: float = 0.0, definite: bool = False):
    """``(M + shift I)^{-1} rhs`` as a (d, s) matrix; None if not positive definite and
    ``definite``."""
    M, rhs, _ = system
    M = M + shift * np.eye(len(rhs))
    try:
        L = np.linalg.cholesky(M)
        solution = np.linalg.solve(L.T, np.linalg.solve(L, rhs))
    except np.linalg.LinAlgError:
        if definite:
            return None
        solution = np.linalg.lstsq(M, rhs, rcond=None)[0]
    return solution.reshape(s, d).T


# The iterative Newton solve (cpp/include/metasp/newton.hpp): relative residual of its stop,
# its stops on the preconditioned residual relative to tol and to ||D||^2, fewest iterations
# worth trying, floor of the diagonal preconditioner relative to the scale.
NEWTON_CG_TOL, STEP_FLOOR, QUADRATIC_FLOOR, MIN_NEWTON_CG, MIN_PRECONDITIONER = (
    _CONSTANTS[name] for name in ("newton_cg_tol", "step_floor", "quadratic_floor",
                                  "min_newton_cg", "min_preconditioner"))


def newton_cg_budget(tasks: Tasks, s: int, how: str = "auto") -> int:
    """Most conjugate-gradient iterations of a Newton solve, 0 for the dense solve: the work of
    forming the dense system over that of one matrix-free product (``newton_cg_budget`` in
    cpp/src/newton.cpp)."""
    N, T, d = float(tasks.n_samples), float(tasks.n_tasks), float(tasks.n_features)
    dense_work = 0.5 * N * d * d + 2.0 * T * s * (s + 1) * d * d
    product_work = 2.0 * N * d + 6.0 * T * d * s
    budget = int(min(d * s, np.floor(dense_work / product_work)))
    if how == "dense":
        return 0
    if how == "cg":
        return int(d * s)
    return budget if budget >= MIN_NEWTON_CG else 0


def newton_cg(system, V: np.ndarray, shift: float, max_iter: int, floor: float = 0.0):
    """Preconditioned conjugate gradients on ``(M + shift I) vec(D) = rhs`` from D = 0, until
    the relative residual is below NEWTON_CG_TOL or the preconditioned residual below ``floor``
    or ``QUADRATIC_FLOOR ||D||^2``.

    The preconditioner is, block by block, the diagonal of the data part plus the gauge
    penalty ``scale V V^T`` (inverted by Woodbury). Returns ``(D, outcome)``: outcome
    ``"converged"``, ``"indefinite"`` (a direction of non-positive curvature; D is None) or
    ``"unconverged"`` (max_iter reached).
    """
    M, rhs, scale = system
    d, s = V.shape
    data_diagonal = (np.diag(M) - scale * np.tile(np.sum(V**2, axis=1), s)).reshape(s, d).T

    def apply(D):
        return (M @ D.T.ravel()).reshape(s, d).T + shift * D

    def precondition(R):
        out = np.empty_like(R)
        for a in range(s):
            inv = 1.0 / np.maximum(data_diagonal[:, a] + shift, MIN_PRECONDITIONER * scale)
            DV = inv[:, None] * V
            capacity = V.T @ DV + np.eye(s) / scale
            x = inv * R[:, a]
            out[:, a] = x - DV @ np.linalg.solve(capacity, V.T @ x)
        return out

    b = rhs.reshape(s, d).T
    D = np.zeros((d, s))
    residual = b.copy()
    z = precondition(residual)
    direction = z
    rz = np.sum(residual * z)
    target = NEWTON_CG_TOL**2 * np.sum(b**2)
    if np.sum(residual**2) <= target or np.linalg.norm(z) <= floor:
        return D, "converged"
    for _ in range(max_iter):
        applied = apply(direction)
        curvature = np.sum(direction * applied)
        if not curvature > 0:
            return None, "indefinite"
        alpha = rz / curvature
        D = D + alpha * direction
        residual = residual - alpha * applied
        if np.sum(residual**2) <= target:
            return D, "converged"
        z = precondition(residual)
        if np.linalg.norm(z) <= max(floor, QUADRATIC_FLOOR * np.sum(D**2)):
            return D, "converged"
        rz_next = np.sum(residual * z)
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    return D, "unconverged"


def _relative_change(factors, Theta):
    next_Theta = factors[0] @ factors[1].T
    norm = np.linalg.norm(next_Theta)
    return np.linalg.norm(next_Theta - Theta) / norm if norm > 0 else 0.0


# The polish (cpp/include/metasp/polish.hpp): damping of the Newton step; the relative change
# below which a sweep whose loss did not decrease is rounding at a stationary point; loss
# stagnation: the last STAGNATION_WINDOW sweeps lowered the loss by less than LOSS_STAGNATION.
DAMPING_ATTEMPTS, DAMPING_FACTOR, MIN_DAMPING = (
    _CONSTANTS[name] for name in ("damping_attempts", "damping_factor", "min_damping"))
STATIONARY_CHANGE = _CONSTANTS["stationary_change"]
STAGNATION_WINDOW = _CONSTANTS["stagnation_window"]
LOSS_STAGNATION = _CONSTANTS["loss_stagnation"]


def _orthonormal(U: np.ndarray) -> np.ndarray:
    return np.linalg.qr(U)[0]


def polish_path(tasks: Tasks, V0: np.ndarray, *, max_iter: int, tol: float, sin_tol: float = 0.0,
                reference_B=None, newton: bool = True, newton_solve: str = "auto") -> dict:
    """Alternating least squares with damped Newton basis steps from span(V0).

    The NumPy twin of ``metasp::polish`` (cpp/src/polish.cpp): same steps, same acceptance
    rules, same stopping rule; returns the same keys as ``metasp._core.polish``.
    ``newton_solve``: ``"auto"``, ``"dense"`` (Cholesky) or ``"cg"`` (:func:`newton_cg`, on
    the dense matrix here, matrix-free in C++).
    """
    V = _orthonormal(V0)
    W, task_loss = heads(tasks, V)
    W, V, S = canonical_factors(W, V)
    loss = start_loss = task_loss.mean()
    Theta = W @ V.T
    d, s = V.shape
    damping = 0.0
    out = {"loss": [], "rel_change": [], "sin_angle": [], "n_newton": 0}
    status, n_iter = "max_iter", 0
    for k in range(max_iter):
        accepted = False
        if newton:
            system = basis_system(tasks, W, V)
            budget = newton_cg_budget(tasks, s, newton_solve)
            for _ in range(DAMPING_ATTEMPTS):
                if budget > 0:
                    D, outcome = newton_cg(system, V, damping * system[2], budget,
                                           STEP_FLOOR * tol)
                    budget = 0 if outcome == "unconverged" else budget
                if budget == 0:
                    D = solve_basis_system(system, d, s, damping * system[2], definite=True)
                if D is not None:
                    V_step = _orthonormal(V + D)
                    W_step, task_loss = heads(tasks, V_step)
                    next_loss = task_loss.mean()
                    candidate = canonical_factors(W_step, V_step)
                    # Within tol of the iterate: converged, whatever rounding did to the loss.
                    if next_loss < loss or _relative_change(candidate, Theta) <= tol:
                        accepted = True
                        out["n_newton"] += 1
                        damping = 0.0 if damping / DAMPING_FACTOR < MIN_DAMPING else damping / DAMPING_FACTOR
                        break
                damping = max(damping * DAMPING_FACTOR, MIN_DAMPING)
        if not accepted:
            U = solve_basis_system(basis_system(tasks, W), d, s)
            _, V_rot, _ = canonical_factors(W, U)
            W_step, task_loss = heads(tasks, V_rot)
            next_loss = task_loss.mean()
            candidate = canonical_factors(W_step, V_rot)
        next_Theta = candidate[0] @ candidate[1].T
        norm = np.linalg.norm(next_Theta)
        rel_change = np.linalg.norm(next_Theta - Theta) / norm if norm > 0 else 0.0
        if not next_loss < loss and not rel_change <= tol:
            status = "converged" if rel_change <= STATIONARY_CHANGE else "stalled"
            break
        (W, V, S), Theta, loss, n_iter = candidate, next_Theta, next_loss, k + 1
        out["loss"].append(loss)
        out["rel_change"].append(rel_change)
        if reference_B is not None:
            out["sin_angle"].append(sin_angle(V.T, reference_B))
        if rel_change <= tol or (sin_tol > 0 and reference_B is not None
                                 and out["sin_angle"][-1] <= sin_tol):
            status = "converged"
            break
        if (tol > 0 and len(out["loss"]) > STAGNATION_WINDOW
                and out["loss"][-1 - STAGNATION_WINDOW] - loss <= LOSS_STAGNATION * loss):
            status = "stalled"
            break
    out.update(Theta=Theta, W=W, B=np.ascontiguousarray(V.T), singular_values=S, n_iter=n_iter,
               status=status, start_loss=start_loss)
    for key in ("loss", "rel_change", "sin_angle"):
        out[key] = np.asarray(out[key])
    return out
