"""Checks shared by the C++ solver and the NumPy reference: bad input fails here, in Python."""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np

from . import _core
from ._arrays import as_float, is_integer, is_real
from ._scaling import Scale, rescaled
from ._tasks import Tasks, as_tasks

# A loss this many times the loss at Theta = 0 means the iteration is diverging (the C++
# core's constant, shared with the baselines).
DIVERGENCE_FACTOR = _core.constants["divergence_factor"]
# The adaptive step falls back to the whole gradient when its projection on the row space has a
# squared norm below this fraction of the gradient's: the C++ core's constant, shared.
VANISHING_PROJECTION = _core.constants["vanishing_projection"]


def check_rank(s, tasks: Tasks) -> int:
    if s is None:
        raise TypeError("the rank s is missing: call fit(Xs, ys, s) with an integer s >= 1")
    if not is_integer(s):
        raise TypeError(f"the rank s must be an integer; got {s!r} of type {type(s).__name__}")
    upper = min(tasks.n_tasks, tasks.n_features)
    if not 1 <= s <= upper:
        raise ValueError(
            f"the rank s must satisfy 1 <= s <= min(T, d) = {upper} "
            f"(T = {tasks.n_tasks} tasks, d = {tasks.n_features} features); got s = {s}"
        )
    return int(s)


def check_step(step) -> tuple[bool, float]:
    """Return (adaptive, gamma)."""
    if isinstance(step, str):
        if step != "auto":
            raise ValueError(f"step must be 'auto' or a positive number; got {step!r}")
        return True, 1.0
    if not is_real(step):
        raise TypeError(f"step must be 'auto' or a positive number; got {type(step).__name__}")
    gamma = as_float(step)
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"a fixed step must be positive and finite; got {step!r}")
    return False, gamma


INIT_OPTIONS = ("zero", "spectral")


def check_init(init, s: int, d: int) -> tuple[str, np.ndarray | None]:
    """Return (kind, B0): kind "zero", "spectral" or "given" (then B0 is (s, d) orthonormal)."""
    if isinstance(init, str):
        if init not in INIT_OPTIONS:
            raise ValueError(
                f"init must be 'zero' (Theta^0 = 0, as in the paper), 'spectral' or an (s, d) "
                f"array spanning a starting subspace; got {init!r}"
            )
        return init, None
    if init is None or not hasattr(init, "__len__"):
        raise ValueError(
            f"init must be 'zero' (Theta^0 = 0, as in the paper), 'spectral' or an (s, d) array "
            f"spanning a starting subspace; got {init!r}"
        )
    B0 = orthonormal_rows(init, "init", d)
    if B0.shape[0] != s:
        raise ValueError(f"an init array must have shape (s, d) = ({s}, {d}); got {np.shape(init)}")
    return "given", B0


def check_accel(accel) -> bool:
    """Return whether to use conjugate directions."""
    if accel is None:
        return False
    if isinstance(accel, str) and accel == "cg":
        return True
    raise ValueError(f"accel must be 'cg' (conjugate directions) or None (plain NIHT); got {accel!r}")


def check_polish(polish, adaptive: bool) -> bool:
    """Return whether to run the least-squares polish; "auto" means yes with step="auto"."""
    if polish is None:
        return False
    if isinstance(polish, str) and polish in ("auto", "als"):
        return adaptive if polish == "auto" else True
    raise ValueError(
        f"polish must be 'auto' (on with step='auto', off with a fixed step), 'als' or None; "
        f"got {polish!r}"
    )


def renamed_refine(refine, polish):
    """The value of ``polish``, taken from ``refine`` (its former name, with a FutureWarning)
    where only that was given."""
    if isinstance(refine, str) and refine == "deprecated":
        return polish
    if not (isinstance(polish, str) and polish == "auto"):
        raise TypeError("refine is the former name of polish: pass polish only")
    warnings.warn("refine was renamed polish; refine= stops working in the next release: "
                  f"pass polish={refine!r} instead", FutureWarning, stacklevel=3)
    return refine


HEADS_OPTIONS = ("auto", "random", "fixed")


def check_heads(heads, adaptive: bool, accel, polish, n_starts) -> str:
    """Return "random" or "fixed"; "auto" is "random" unless an option of the fixed-heads
    solver (a fixed step, accel, polish, n_starts) was changed from its default."""
    if not (isinstance(heads, str) and heads in HEADS_OPTIONS):
        raise ValueError(
            f"heads must be 'auto', 'random' (heads integrated out: the marginal likelihood) or "
            f"'fixed' (least-squares heads, the paper's estimator); got {heads!r}")
    solver_options = not (adaptive and accel == "cg" and polish == "auto" and n_starts == 1)
    if heads == "auto":
        return "fixed" if solver_options else "random"
    if heads == "random" and solver_options:
        raise ValueError(
            "step, accel, polish and n_starts are options of the fixed-heads solver; leave them "
            "at their defaults with heads='random', or pass heads='fixed'")
    return heads


def check_n_starts(n_starts) -> int:
    if not is_integer(n_starts):
        raise TypeError(f"n_starts must be an integer; got {type(n_starts).__name__}")
    if not 1 <= n_starts <= 1000:
        raise ValueError(f"n_starts must be between 1 and 1000; got {n_starts}")
    return int(n_starts)


def check_sin_tol(sin_tol, reference_B) -> float:
    """0.0 for None (no sin-angle stopping)."""
    if sin_tol is None:
        return 0.0
    if not is_real(sin_tol):
        raise TypeError(f"sin_tol must be a real number or None; got {type(sin_tol).__name__}")
    value = as_float(sin_tol)
    if not (np.isfinite(value) and 0 < value < 1):
        raise ValueError(f"sin_tol must be in (0, 1); got {sin_tol!r}")
    if reference_B is None:
        raise ValueError("sin_tol needs reference_B: the subspace the sin angle is measured to")
    return value


def random_starts(n_starts: int, s: int, d: int, seed: int) -> list:
    """Orthonormal (d, s) bases for the starts after the first, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [np.asfortranarray(np.linalg.qr(rng.standard_normal((d, s)))[0])
            for _ in range(n_starts - 1)]


# The C++ core counts in C ints.
_INT_MAX = 2**31 - 1


def check_count(value, name: str, minimum: int = 1) -> int:
    """An integer of at least ``minimum``."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
    return int(value)


def check_shots(shots) -> list:
    """Support-set sizes: a non-empty sequence of positive integers."""
    if isinstance(shots, (str, bytes)) or not np.iterable(shots) or len(shots) == 0:
        raise TypeError(f"shots must be a non-empty sequence of positive integers; got "
                        f"{shots!r}")
    return [check_count(k, "every entry of shots") for k in shots]


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """A finite real number above zero (or at least zero with ``allow_zero``)."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    number = as_float(value)
    if not np.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound} and finite; got {value!r}")
    return number


def check_max_iter(max_iter, name: str = "max_iter") -> int:
    """A positive iteration cap; values beyond what C counts in are the same as no cap."""
    return min(check_count(max_iter, name), _INT_MAX)


def check_tol(tol) -> float:
    return check_positive(tol, "tol", allow_zero=True)


def hardware_threads() -> int:
    """Processors this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def resolve_n_jobs(n_jobs, available: int) -> int:
    """Thread count with scikit-learn's meaning of n_jobs, at most the hardware's.

    ``available`` is what "all threads" means (OpenMP's default, which honours
    OMP_NUM_THREADS). A positive n_jobs above both it and the processors this process may use
    is capped there, as joblib caps it: more threads than processors only add switching, and
    OpenMP allocates per thread (a million threads crash the process).
    """
    if n_jobs is None:
        return max(1, int(available))
    if not is_integer(n_jobs):
        raise TypeError(f"n_jobs must be an integer or None; got {type(n_jobs).__name__}")
    if n_jobs == 0:
        raise ValueError("n_jobs=0 is not allowed: use None or -1 for all threads, 1 for one")
    if n_jobs < 0:
        return max(1, int(available) + 1 + max(int(n_jobs), -_INT_MAX))
    return min(int(n_jobs), max(int(available), hardware_threads()))


def seed_from(random_state) -> int:
    """A 63-bit seed from None, an int, a SeedSequence, a Generator or a RandomState."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int64).max))
    if isinstance(random_state, bool):
        raise TypeError("random_state must be None, an int or a numpy random generator")
    if is_integer(random_state) and random_state < 0:
        raise ValueError(f"random_state must be a non-negative int; got {random_state}")
    try:
        rng = np.random.default_rng(random_state)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"random_state must be None, a non-negative int or a numpy random generator; "
            f"got {random_state!r} ({error})"
        ) from None
    return int(rng.integers(np.iinfo(np.int64).max))


def orthonormal_rows(B, name: str, n_features: int | None = None) -> np.ndarray:
    """Orthonormal basis (as rows) of the row space of a full-rank (s, d) matrix."""
    B = np.asarray(B)
    if B.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real numeric array; got dtype {B.dtype}")
    if B.ndim != 2 or B.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (s, d); got shape {B.shape}")
    if n_features is not None and B.shape[1] != n_features:
        raise ValueError(f"{name} must have d = {n_features} columns; got shape {B.shape}")
    if B.shape[0] > B.shape[1]:
        raise ValueError(f"{name} has more rows than columns ({B.shape}); it cannot be full rank")
    B = B.astype(np.float64)
    if not np.isfinite(B).all():
        raise ValueError(f"{name} contains NaN or inf")
    Q, R = np.linalg.qr(B.T)
    diagonal = np.abs(np.diag(R))
    if diagonal.min() <= 1e-12 * max(diagonal.max(), np.finfo(float).tiny):
        raise ValueError(f"{name} does not have full row rank")
    return np.ascontiguousarray(Q.T)


def check_reference_B(reference_B, s: int, d: int) -> np.ndarray | None:
    if reference_B is None:
        return None
    B = orthonormal_rows(reference_B, "reference_B", d)
    if B.shape[0] != s:
        raise ValueError(f"reference_B must have shape (s, d) = ({s}, {d}); got {np.shape(reference_B)}")
    return B


def rescaled_arguments(args: FitArguments) -> tuple[FitArguments, Scale]:
    """``args`` with the tasks rescaled (:func:`rescaled`), and the scale. A fixed step on
    X * 2^-x takes the same iterates as the given one on X when multiplied by 4^x (gamma X^T X
    is invariant); it is kept within the positive floats."""
    tasks, scale = rescaled(args.tasks)
    return args._replace(tasks=tasks, step=rescaled_step(args, scale)), scale


def rescaled_step(args: FitArguments, scale: Scale) -> float:
    """The fixed step of ``args`` for the data rescaled by ``scale`` (see
    :func:`rescaled_arguments`)."""
    if args.adaptive:
        return args.step
    with np.errstate(over="ignore"):  # saturates, then clipped
        return float(np.clip(np.ldexp(args.step, 2 * scale.x), np.nextafter(0.0, 1.0),
                             np.finfo(float).max))


class FitArguments(NamedTuple):
    tasks: Tasks
    s: int
    adaptive: bool
    step: float
    max_iter: int
    tol: float
    n_threads: int
    seed: int
    reference_B: np.ndarray | None
    conjugate: bool = False
    polish: bool = False
    init: str = "zero"
    init_B: np.ndarray | None = None
    starts: list = []
    sin_tol: float = 0.0
    heads: str = "fixed"


def check_fit_arguments(
    Xs, ys, s, step, init, max_iter, tol, n_jobs, random_state, reference_B, available_threads,
    accel=None, polish=None, n_starts=1, sin_tol=None, heads="fixed",
) -> FitArguments:
    """Validate everything :func:`metasp.fit` and :func:`metasp.reference.fit` accept."""
    return check_fit_options(as_tasks(Xs, ys), s, step, init, max_iter, tol, n_jobs,
                             lambda n: resolve_n_jobs(n, available_threads), random_state,
                             reference_B, accel, polish, n_starts, sin_tol, heads)


def check_fit_options(tasks, s, step, init, max_iter, tol, n_jobs, threads, random_state,
                      reference_B, accel, polish, n_starts, sin_tol, heads) -> FitArguments:
    """:func:`check_fit_arguments` for tasks already checked (anything with ``n_tasks`` and
    ``n_features``: :func:`metasp.dask.fit` passes the cluster's); ``threads(n_jobs)`` gives
    the thread count."""
    s = check_rank(s, tasks)
    adaptive, step = check_step(step)
    init, init_B = check_init(init, s, tasks.n_features)
    reference_B = check_reference_B(reference_B, s, tasks.n_features)
    seed = seed_from(random_state)
    return FitArguments(
        tasks=tasks,
        s=s,
        adaptive=adaptive,
        step=step,
        max_iter=check_max_iter(max_iter),
        tol=check_tol(tol),
        n_threads=threads(n_jobs),
        seed=seed,
        reference_B=reference_B,
        conjugate=check_accel(accel) and adaptive,
        polish=check_polish(polish, adaptive),
        init=init,
        init_B=init_B,
        starts=random_starts(check_n_starts(n_starts), s, tasks.n_features, seed),
        sin_tol=check_sin_tol(sin_tol, reference_B),
        heads=check_heads(heads, adaptive, accel, polish, n_starts),
    )


def check_polish_arguments(Xs, ys, B, max_iter, tol, n_jobs, reference_B, available_threads):
    """Validate what :func:`metasp.polish` accepts; the start is ``init_B``."""
    tasks = as_tasks(Xs, ys)
    if B is None:
        raise TypeError("the starting subspace B is missing: call polish(Xs, ys, B)")
    init_B = orthonormal_rows(B, "B", tasks.n_features)
    s = check_rank(init_B.shape[0], tasks)
    return FitArguments(
        tasks=tasks, s=s, adaptive=True, step=1.0, max_iter=check_max_iter(max_iter),
        tol=check_tol(tol), n_threads=resolve_n_jobs(n_jobs, available_threads), seed=0,
        reference_B=check_reference_B(reference_B, s, tasks.n_features), polish=True,
        init="given", init_B=init_B,
    )
