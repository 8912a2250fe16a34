"""The least-squares polish (cpp/src/polish.cpp) over any holder of the tasks.

:func:`polish_sweeps` runs the polish's sweeps (heads, then a damped Newton or ALS step of the
basis) on a *problem*: whatever holds the tasks and answers a few questions about them. It is the
seam that lets :func:`metasp.reference.polish_path` run it on tasks in memory and
:mod:`metasp.dask` on tasks spread over a cluster, where the heads stay with their tasks:

``problem.n_samples``, ``problem.n_tasks``, ``problem.n_features``
    Sizes (they choose between the dense and the iterative Newton solve).
``problem.heads(V) -> (heads, mean_loss)``
    The least-squares heads in span(V) (opaque to the loop) and the mean task loss.
``problem.canonical(heads, U) -> (heads, V, singular_values)``
    The canonical factors of ``heads U^T``: orthonormal V, heads with orthogonal columns.
``problem.basis_system_sums(heads, V=None) -> (M, rhs)``
    :func:`metasp.kernels.basis_system_sums` summed over all tasks.
``problem.newton_operator(heads, V)``
    The Newton system as :func:`newton_cg` reads it (:class:`DenseNewton` or matrix-free).
``problem.relative_change(new, old) -> float``
    ``||Theta_new - Theta_old||_F / ||Theta_new||_F`` for ``(heads, V)`` pairs.
"""

from __future__ import annotations

import numpy as np

from . import _core
from .metrics import sin_angle

_CONSTANTS = _core.constants

# The iterative Newton solve (cpp/include/metasp/newton.hpp): relative residual of its stop,
# its stops on the preconditioned residual relative to tol and to ||D||^2, fewest iterations
# worth trying, floor of the diagonal preconditioner relative to the scale.
NEWTON_CG_TOL, STEP_FLOOR, QUADRATIC_FLOOR, MIN_NEWTON_CG, MIN_PRECONDITIONER = (
    _CONSTANTS[name] for name in ("newton_cg_tol", "step_floor", "quadratic_floor",
                                  "min_newton_cg", "min_preconditioner"))

# The polish (cpp/include/metasp/polish.hpp): damping of the Newton step; the relative change
# below which a sweep whose loss did not decrease is rounding at a stationary point; loss
# stagnation: the last STAGNATION_WINDOW sweeps lowered the loss by less than LOSS_STAGNATION.
DAMPING_ATTEMPTS, DAMPING_FACTOR, MIN_DAMPING = (
    _CONSTANTS[name] for name in ("damping_attempts", "damping_factor", "min_damping"))
STATIONARY_CHANGE = _CONSTANTS["stationary_change"]
STAGNATION_WINDOW = _CONSTANTS["stagnation_window"]
LOSS_STAGNATION = _CONSTANTS["loss_stagnation"]


def finished_system(M, rhs, V=None):
    """``(M, rhs, scale)`` of a basis step from its sums over tasks: scale is the mean diagonal
    entry, and a Newton system (``V`` given) gets the gauge penalty ``scale (I_s kron V V^T)``
    (``add_gauge_penalty`` in cpp/src/basis_system.cpp)."""
    scale = max(np.mean(np.diag(M)), np.finfo(float).tiny)
    if V is not None:
        M = M + np.kron(np.eye(V.shape[1]), scale * V @ V.T)
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


def newton_cg_budget(tasks, s: int, how: str = "auto") -> int:
    """Most conjugate-gradient iterations of a Newton solve, 0 for the dense solve: the work of
    forming the dense system over that of one matrix-free product (``newton_cg_budget`` in
    cpp/src/newton.cpp). ``tasks``: anything with ``n_samples``, ``n_tasks``, ``n_features``."""
    N, T, d = float(tasks.n_samples), float(tasks.n_tasks), float(tasks.n_features)
    dense_work = 0.5 * N * d * d + 2.0 * T * s * (s + 1) * d * d
    product_work = 2.0 * N * d + 6.0 * T * d * s
    budget = int(min(d * s, np.floor(dense_work / product_work)))
    if how == "dense":
        return 0
    if how == "cg":
        return int(d * s)
    return budget if budget >= MIN_NEWTON_CG else 0


class DenseNewton:
    """A Newton system formed densely (``(M, rhs, scale)`` of :func:`finished_system`), as
    :func:`newton_cg` reads it: ``rhs`` and ``data_diagonal`` (d, s), ``scale``, ``V``,
    ``apply(D)``."""

    def __init__(self, system, V: np.ndarray):
        self.M, rhs, self.scale = system
        self.V = V
        d, s = V.shape
        self.rhs = rhs.reshape(s, d).T
        self.data_diagonal = (np.diag(self.M) - self.scale * np.tile(np.sum(V**2, axis=1), s)
                              ).reshape(s, d).T

    def apply(self, D):
        d, s = self.V.shape
        return (self.M @ D.T.ravel()).reshape(s, d).T


def newton_cg(system, shift: float, max_iter: int, floor: float = 0.0):
    """Preconditioned conjugate gradients on ``(Newton matrix + shift I) D = rhs`` from D = 0,
    until the relative residual is below NEWTON_CG_TOL or the preconditioned residual below
    ``floor`` or ``QUADRATIC_FLOOR ||D||^2``.

    ``system``: :class:`DenseNewton`, or any object with its attributes (a problem's
    ``newton_operator``, applied matrix-free). The preconditioner is, block by block, the
    diagonal of the data part plus the gauge penalty ``scale V V^T`` (inverted by Woodbury).
    Returns ``(D, outcome)``: outcome ``"converged"``, ``"indefinite"`` (a direction of
    non-positive curvature; D is None) or ``"unconverged"`` (max_iter reached).
    """
    V, scale, data_diagonal = system.V, system.scale, system.data_diagonal
    s = V.shape[1]

    def apply(D):
        return system.apply(D) + shift * D

    def precondition(R):
        out = np.empty_like(R)
        for a in range(s):
            inv = 1.0 / np.maximum(data_diagonal[:, a] + shift, MIN_PRECONDITIONER * scale)
            DV = inv[:, None] * V
            capacity = V.T @ DV + np.eye(s) / scale
            x = inv * R[:, a]
            out[:, a] = x - DV @ np.linalg.solve(capacity, V.T @ x)
        return out

    b = system.rhs
    D = np.zeros_like(b)
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


def _orthonormal(U: np.ndarray) -> np.ndarray:
    return np.linalg.qr(U)[0]


def _newton_step(problem, current, loss, damping, tol, newton_solve):
    """A damped Newton step of the basis with the heads refitted; ``(candidate, loss,
    damping)``, candidate None where no damping lowered the loss."""
    W, V, _ = current
    d, s = V.shape
    budget = newton_cg_budget(problem, s, newton_solve)
    operator = problem.newton_operator(W, V) if budget > 0 else None
    system = None
    for _ in range(DAMPING_ATTEMPTS):
        if budget > 0:
            D, outcome = newton_cg(operator, damping * operator.scale, budget, STEP_FLOOR * tol)
            budget = 0 if outcome == "unconverged" else budget
        if budget == 0:
            if system is None:  # formed only where the iterative solve is not used
                system = finished_system(*problem.basis_system_sums(W, V), V)
            D = solve_basis_system(system, d, s, damping * system[2], definite=True)
        if D is not None:
            V_step = _orthonormal(V + D)
            W_step, next_loss = problem.heads(V_step)
            candidate = problem.canonical(W_step, V_step)
            # Within tol of the iterate: converged, whatever rounding did to the loss.
            if (next_loss < loss
                    or problem.relative_change(candidate[:2], current[:2]) <= tol):
                damping = 0.0 if damping / DAMPING_FACTOR < MIN_DAMPING else damping / DAMPING_FACTOR
                return candidate, next_loss, damping
        damping = max(damping * DAMPING_FACTOR, MIN_DAMPING)
    return None, loss, damping


def _als_step(problem, current):
    """The exact least-squares basis for fixed heads, then the heads: ``(candidate, loss)``."""
    W, V, _ = current
    d, s = V.shape
    U = solve_basis_system(finished_system(*problem.basis_system_sums(W)), d, s)
    _, V_rot, _ = problem.canonical(W, U)
    W_step, next_loss = problem.heads(V_rot)
    return problem.canonical(W_step, V_rot), next_loss


def polish_sweeps(problem, V0: np.ndarray, *, max_iter: int, tol: float, sin_tol: float = 0.0,
                  reference_B=None, newton: bool = True, newton_solve: str = "auto") -> dict:
    """Alternating least squares with damped Newton basis steps from span(V0), on ``problem``.

    The same steps, acceptance rules and stopping rule as ``metasp::polish``. Returns the keys
    of ``metasp._core.polish`` but ``Theta``, with ``heads`` (the problem's, canonical) for
    ``W``. ``newton_solve``: ``"auto"``, ``"dense"`` (Cholesky) or ``"cg"``
    (:func:`newton_cg` on the problem's ``newton_operator``).
    """
    V = _orthonormal(V0)
    W, loss = problem.heads(V)
    current = problem.canonical(W, V)
    start_loss = loss
    damping = 0.0
    out = {"loss": [], "rel_change": [], "sin_angle": [], "n_newton": 0}
    status, n_iter = "max_iter", 0
    for k in range(max_iter):
        candidate = None
        if newton:
            candidate, next_loss, damping = _newton_step(problem, current, loss, damping, tol,
                                                         newton_solve)
            out["n_newton"] += candidate is not None
        if candidate is None:
            candidate, next_loss = _als_step(problem, current)
        rel_change = problem.relative_change(candidate[:2], current[:2])
        if not next_loss < loss and not rel_change <= tol:
            status = "converged" if rel_change <= STATIONARY_CHANGE else "stalled"
            break
        current, loss, n_iter = candidate, next_loss, k + 1
        out["loss"].append(loss)
        out["rel_change"].append(rel_change)
        if reference_B is not None:
            out["sin_angle"].append(sin_angle(current[1].T, reference_B))
        if rel_change <= tol or (sin_tol > 0 and reference_B is not None
                                 and out["sin_angle"][-1] <= sin_tol):
            status = "converged"
            break
        if (tol > 0 and len(out["loss"]) > STAGNATION_WINDOW
                and out["loss"][-1 - STAGNATION_WINDOW] - loss <= LOSS_STAGNATION * loss):
            status = "stalled"
            break
    heads, V, S = current
    out.update(heads=heads, B=np.ascontiguousarray(V.T), singular_values=S, n_iter=n_iter,
               status=status, start_loss=start_loss)
    for key in ("loss", "rel_change", "sin_angle"):
        out[key] = np.asarray(out[key])
    return out


def joined_history(history: dict, polished: dict, tracked: bool) -> dict:
    """A random-heads fit's ``history`` followed by the polish sweeps that finished it (loss,
    relative change, the sin angle where ``tracked``, phase ``"polish"``)."""
    for key in ("loss", "rel_change") + (("sin_angle",) if tracked else ()):
        history[key] = np.concatenate([history[key], polished[key]])
    history["phase"] = np.concatenate([history["phase"],
                                       np.full(polished["n_iter"], "polish")])
    return history
