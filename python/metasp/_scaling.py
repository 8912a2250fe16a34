"""Data of any scale on a scale every fit computes on: exact power-of-two rescaling of X and y."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._tasks import Tasks

# Data whose largest entries lie within 2^-SAFE_EXPONENT .. 2^SAFE_EXPONENT are fitted as they
# are (no copy, the same arithmetic): the products a fit forms (X^T X, y^2, heads of order y / X
# and their squares) stay far inside the float64 range. Beyond it, X or y is scaled by a power
# of two (exact) so that its largest entry lies in [0.5, 1), and the result scaled back: the
# subspace does not change, the heads scale by the ratio.
SAFE_EXPONENT = 64
# A task whose largest entry of X is below 2^-TASK_EXPONENT times the largest of all tasks
# cannot share their scale: the products of its rows would underflow while theirs stay in range.
TASK_EXPONENT = 200
# Targets from 2^SQUARE_EXPONENT on have squares (the unit of every loss) beyond float64.
SQUARE_EXPONENT = 511


class Scale(NamedTuple):
    """The fit saw X * 2^-x and y * 2^-y."""

    x: int = 0
    y: int = 0

    @property
    def identity(self) -> bool:
        return self.x == 0 and self.y == 0


def _exponent(largest: float) -> int:
    """0 inside the safe range (or for 0), else the power of two of ``largest``."""
    if largest == 0 or 2.0**-SAFE_EXPONENT <= largest <= 2.0**SAFE_EXPONENT:
        return 0
    return int(np.frexp(largest)[1])


def data_scale(tasks: Tasks) -> Scale:
    """The powers of two that bring the largest entries of X and y into [0.5, 1), or 0 for
    data within the safe range.

    Raises ValueError naming the tasks whose scale is too far below the others' for one
    float64 scale to hold them all, and for targets whose squares overflow.
    """
    X, y = tasks.X, tasks.y
    # Task maxima of |X| without an (N, d) temporary: X is C-contiguous, so each task's rows
    # are one stretch of X.ravel(), reduced at once (half the time of row maxima first).
    starts = tasks.offsets[:-1] * X.shape[1]
    flat = X.reshape(-1)
    x_tasks = np.maximum(np.maximum.reduceat(flat, starts),
                         -np.minimum.reduceat(flat, starts)).astype(np.float64)
    y_tasks = np.maximum.reduceat(np.abs(y), tasks.offsets[:-1])
    x_largest = float(x_tasks.max())
    tiny = np.flatnonzero((x_tasks > 0) & (x_tasks < np.ldexp(x_largest, -TASK_EXPONENT)))
    if tiny.size:
        largest_task = int(np.argmax(x_tasks))
        named = ", ".join(str(t) for t in tiny[:5]) + (", ..." if tiny.size > 5 else "")
        raise ValueError(
            f"task{'s' if tiny.size > 1 else ''} {named} ({tiny.size} of {tasks.n_tasks}) "
            f"{'have' if tiny.size > 1 else 'has'} X entries at most {x_tasks[tiny[0]]:.3g}, "
            f"below 2^-{TASK_EXPONENT} times the largest entry of task {largest_task} "
            f"({x_largest:.3g}): on one float64 scale the products of their rows (X_t^T X_t) "
            f"underflow while the others' do not. Rescale each task (for example divide X_t "
            f"and y_t by the standard deviation of X_t), or leave those tasks out.")
    y_largest = float(y_tasks.max())
    if y_largest >= 2.0**SQUARE_EXPONENT:
        raise ValueError(
            f"the largest |y| is {y_largest:.3g}: its square, the unit of the losses and of the "
            f"noise variance of a fit, is beyond the float64 range (1.8e308). Divide y by a "
            f"power of ten (say 1e{int(np.log10(y_largest)) // 2}): the subspace B does not "
            f"change, and W and Theta scale with y.")
    return Scale(_exponent(x_largest), _exponent(y_largest))


def rescaled(tasks: Tasks) -> tuple[Tasks, Scale]:
    """``tasks`` on a scale every fit can compute on (see :func:`data_scale`), and the powers
    of two that took them there: the same object, and ``Scale(0, 0)``, for data within the
    safe range."""
    scale = data_scale(tasks)
    if scale.identity:
        return tasks, scale
    X = np.ldexp(tasks.X, -scale.x) if scale.x else tasks.X
    y = np.ldexp(tasks.y, -scale.y) if scale.y else tasks.y
    return Tasks(X, y, tasks.offsets, tasks.labels, tasks.feature_names), scale


def check_unscaled(tasks: Tasks, caller: str) -> None:
    """For code that computes on the data as given (the baselines): raise ValueError, naming
    the array, where X or y lies outside the safe range (or a task far below the others)."""
    scale = data_scale(tasks)
    for name, exponent in (("X", scale.x), ("y", scale.y)):
        if exponent:
            raise ValueError(
                f"{caller} computes on the data as given, and the largest |entry| of {name} is "
                f"about 2^{exponent - 1}, outside 2^-{SAFE_EXPONENT} to 2^{SAFE_EXPONENT} "
                f"(5e-20 to 2e19), where products such as X^T X and y^2 stay inside float64. "
                f"Scale {name} by a power of ten towards 1 first, or use metasp.fit, which "
                f"rescales internally.")
