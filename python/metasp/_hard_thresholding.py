"""The fixed-heads solver (cpp/src/solver.cpp) over any holder of the tasks.

:class:`Start` is one start of Meta-SP with fixed heads: hard thresholding (IHT, NIHT or CGIHT),
then the least-squares polish (:func:`metasp._polish.polish_sweeps`); :func:`best_start` runs
every start and keeps the best. Both talk to the tasks only through a *problem*, the seam that
lets :func:`metasp.reference.fit` run them on tasks in memory (exact SVDs) and
:mod:`metasp.dask` on tasks spread over a cluster. Besides the polish's questions
(:mod:`metasp._polish`), a problem holds (T, k) row blocks (the iterate, the gradient, the
directions: opaque to the solver) and answers:

``zeros(k)``
    The (T, k) block of zeros.
``initial_loss()``
    The mean over tasks of ``||y_t||^2 / m_t`` (the loss at Theta = 0).
``gradient(Theta) -> (G, mean_loss)``
    :func:`metasp.kernels.gradient`'s rows and the mean task loss.
``top_subspace(A, s) -> TruncatedSVD or None``
    The top-s singular triplets of a (T, d) block (V (d, s), singular values, W = A V a block);
    None where ``||A||^2`` is not finite.
``combine(A, a, B, b)``, ``times(A, M)``, ``product(W, V)``
    ``a A + b B``, ``A M`` for a small matrix M, and ``W V^T``.
``is_zero(A)``, ``change(new, old) -> (||new||, ||new - old||)``
``curvature(C, B)``
    The sum over tasks of ``||X_t B c_t||^2 / m_t``.
``line_search_sums(G, V, D=None) -> (sums, D V)``
    What the exact line search needs, in one pass: with ``R = G V`` (and ``P = D V``), the
    sums ``projected`` ||R||^2, ``gradient`` ||G||^2, ``curvature`` (of R in V, as
    ``curvature(R, V)``), and with D: ``direction`` ||P||^2, ``cross`` <R, P>,
    ``cross_curvature`` sum_t <X_t V r_t, X_t V p_t> / m_t and ``direction_curvature``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import _core
from ._polish import polish_sweeps
from .kernels import TruncatedSVD
from .metrics import sin_angle

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


def best_start(args, problem):
    """Every start (``args.init``, then ``args.starts``) on ``problem``; the run with the lowest
    final loss that did not diverge (else the first), with ``start_loss`` and ``start_iter``."""
    best, start_loss, start_iter = None, [], []
    starts = [(args.init, None if args.init_B is None else args.init_B.T)]
    starts += [("given", V0) for V0 in args.starts]
    for kind, V0 in starts:
        run = Start(args, kind, V0, problem).run()
        loss = run.history["loss"]
        run.final_loss = loss[-1] if len(loss) else run.initial_loss
        start_loss.append(run.final_loss)  # a diverged start: its last finite iterate
        start_iter.append(run.n_iter)
        if best is None or (run.status != "diverged" and (
                best.status == "diverged" or run.final_loss < best.final_loss)):
            best = run
    best.start_loss, best.start_iter = start_loss, start_iter
    return best


class Start:
    """One start: hard thresholding, then the polish; the twin of ``Start`` in
    cpp/src/solver.cpp, with the same steps under the same names. An iteration is
    :meth:`pass_over_x`, then :meth:`step_rule` (or :meth:`backtrack`, CGIHT's undo of a step
    that raised the loss), :meth:`threshold` and :meth:`stop_test`."""

    def __init__(self, args, kind, V0, problem):
        self.args, self.kind, self.V0 = args, kind, V0
        self.problem, self.s = problem, args.s
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
        p = self.problem
        self.Theta = p.zeros(p.n_features)
        self.initial_loss = p.initial_loss()
        if self.kind == "zero":
            return
        V0 = self.V0
        if self.kind == "spectral":
            V0 = p.top_subspace(p.gradient(self.Theta)[0], self.s).V
        W0, _ = p.heads(V0)
        W0, V, S = p.canonical(W0, V0)
        self.Theta = p.product(W0, V)
        self.svd = TruncatedSVD(V=V, singular_values=S, W=W0, basis=V, n_steps=0, converged=True)

    def pass_over_x(self):
        """The gradient G and the loss of the current iterate."""
        self.G, loss = self.problem.gradient(self.Theta)
        return loss

    def step_rule(self, k, loss, record):
        """The step (fixed, the exact line search, or CGIHT's) and the step's target
        Theta + step * direction; with CGIHT the iterate it leaves is kept, for backtracking."""
        args, p, G = self.args, self.problem, self.G
        conjugate = self.conjugate
        step, beta = args.step, (0.0 if conjugate else np.nan)
        if conjugate:
            self.retries = 0
            self.accepted = (self.Theta, self.svd,
                             loss if (k > 0 or self.kind != "zero") else self.initial_loss)
        if args.adaptive:
            V = (self.svd if self.svd is not None else p.top_subspace(G, self.s)).V
            paired = conjugate and self.have_direction
            sums, Cp = p.line_search_sums(G, V, self.direction if paired else None)
            rr, gradient_norm = sums["projected"], sums["gradient"]
            whole = rr <= _CONSTANTS["vanishing_projection"] * gradient_norm
            if whole:  # the gradient is orthogonal to the row space: search along all of it
                numerator = gradient_norm
                denominator = p.curvature(G, np.eye(p.n_features))
            else:
                numerator, denominator = rr, sums["curvature"]
            if paired and not whole:
                aa, ad, dd = sums["curvature"], sums["cross_curvature"], sums["direction_curvature"]
                b = -ad / dd if dd > 0 else np.nan
                num = rr + b * sums["cross"]
                den = aa + 2 * b * ad + b * b * dd
                restart = (not dd > 0 or not np.isfinite(b)
                           or abs(b) * np.sqrt(sums["direction"])
                           > _CONSTANTS["max_conjugacy"] * np.sqrt(rr)
                           or not num > _CONSTANTS["min_conjugate_share"] * rr
                           or not den > _CONSTANTS["min_conjugate_share"] * aa)
                if not restart:
                    numerator, denominator, beta = num, den, b
            step = numerator / denominator if denominator > 0 else 0.0
            if conjugate:
                self.direction = p.combine(G, 1.0, p.times(Cp, V.T), beta) if beta != 0 else G
        record.update(step=step, beta=beta)
        return p.combine(self.Theta, 1.0, self.direction if conjugate else G, step)

    def backtrack(self, record):
        """CGIHT's safeguard: the update raised the loss, so it is undone and retried with half
        the step along the same direction; returns the target as :meth:`step_rule` does."""
        self.retries += 1
        self.Theta, self.svd = self.accepted[0], self.accepted[1]
        record.update(step=0.5 * self.history[-1]["step"], beta=0.0)
        return self.problem.combine(self.Theta, 1.0, self.direction, record["step"])

    def threshold(self, svd, record):
        """Hard thresholding to the rank-s iterate of the target's truncated SVD; fills the
        record's relative change and sin angle, returns (norm, change)."""
        p = self.problem
        self.svd = svd
        new_Theta = p.product(self.svd.W, self.svd.V)
        norm, change = p.change(new_Theta, self.Theta)
        self.Theta = new_Theta
        reference = self.args.reference_B
        record.update(rel_change=change / norm if norm > 0 else 0.0, phase=0,
                      sin_angle=np.nan if reference is None else sin_angle(self.svd.V.T, reference))
        return norm, change

    def stop_test(self, record, norm, change):
        """Converged (sin angle or relative change), the hand-over to the polish, or stalled;
        sets the status, True: leave hard thresholding."""
        args, p = self.args, self.problem
        if args.reference_B is not None and args.sin_tol > 0 and record["sin_angle"] <= args.sin_tol:
            self.status, self.done = "converged", True
            return True
        # A zero iterate has converged only where the gradient at it vanishes.
        stationary = (change <= args.tol * norm if norm > 0
                      else p.is_zero(p.gradient(p.zeros(p.n_features))[0]))
        if args.tol > 0 and stationary:
            self.status = "converged"
            return True
        if args.polish:
            # Without the Newton step (d * s beyond dense normal equations) the polish is slow
            # ALS: hard thresholding goes further before handing over.
            slow = p.n_features * self.s > _CONSTANTS["max_dense_normal"]
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
        polished = polish_sweeps(self.problem, self.svd.V, max_iter=args.max_iter - self.n_iter,
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
        self.W, self.B = polished["heads"], polished["B"]
        self.Theta = self.problem.product(self.W, self.B.T)
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
            svd = self.problem.top_subspace(target, self.s)
            if svd is None:  # the target is beyond float64
                self.status = "diverged"
                break
            norm, change = self.threshold(svd, record)
            self.n_iter = k + 1
            pending = record
            if self.stop_test(record, norm, change):
                break
        n_iht = self.n_iter
        if pending is not None:  # the last iterate's loss, once more over X
            pending["loss"] = self.problem.gradient(self.Theta)[1]
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
        p, s = self.problem, self.s
        if self.svd is None:  # stopped before the first update: Theta is still zero
            self.W, self.B = p.zeros(s), np.eye(s, p.n_features)
            self.singular_values = np.zeros(s)
        else:
            self.W, self.B = self.svd.W, self.svd.V.T
            self.singular_values = self.svd.singular_values
