"""Array and number helpers every metasp module may use: checks and conversions of user input.

A leaf module: it imports nothing from metasp, so that any module can import it.
"""

from __future__ import annotations

import numbers

import numpy as np


def is_integer(value) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (Python, NumPy, Fraction, ...), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_float(value) -> float:
    """A real number (float, int, numpy scalar, Fraction, ...) as a float; NaN where it is
    beyond the float range, so that the finiteness checks reject it."""
    try:
        return float(value)
    except OverflowError:  # an int or a Fraction beyond 1.8e308
        return float("nan")


def numeric_array(values, name: str) -> np.ndarray:
    """Return ``values`` as an array, refusing dtypes that are not real numbers."""
    if type(values).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a sparse {type(values).__name__}; metasp needs dense data: "
                        f"pass {name}.toarray()")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:  # ragged nested lists, objects numpy rejects
        raise TypeError(f"{name} could not be read as a numeric array: {error}") from None
    if array.dtype == object:
        array = _object_to_float(array, name)
    if array.dtype.kind == "c":
        raise TypeError(
            f"{name} has complex dtype {array.dtype}; metasp fits real-valued regressions. "
            "Pass the real part (np.real) or split real and imaginary parts into features."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {array.dtype}, which is not numeric; convert it with "
            f"np.asarray({name}, dtype=float) after encoding any non-numeric columns."
        )
    return array


def _object_to_float(array: np.ndarray, name: str) -> np.ndarray:
    """An object array whose entries are all real numbers, as float64; else a ``TypeError``.

    pandas gives object arrays for frames that mix booleans and floats, for example. Strings,
    ``None`` and ``pandas.NA`` are refused rather than parsed or read as NaN: they are a sign
    of data that needs cleaning first.
    """
    for index, value in enumerate(array.flat):
        if not isinstance(value, (numbers.Real, np.bool_)):
            where = ", ".join(str(i) for i in np.unravel_index(index, array.shape))
            raise TypeError(
                f"{name} has dtype object, which is not numeric: its entry at [{where}] is "
                f"{value!r} (a {type(value).__name__}). The argument must be free of strings, "
                "None and other objects: real numbers only. Encode or impute such entries, "
                f"then convert with np.asarray({name}, dtype=float)"
            )
    return array.astype(np.float64)


def as_float64(array: np.ndarray) -> np.ndarray:
    """C-contiguous float64: the same object when it already is, else one deliberate copy."""
    return np.ascontiguousarray(array, dtype=np.float64)


def is_float32(array: np.ndarray) -> bool:
    """Whether ``array`` holds 4-byte floats."""
    return array.dtype.kind == "f" and array.dtype.itemsize == 4


def as_core_matrix(X: np.ndarray, dtype=None) -> np.ndarray:
    """X as the C++ core reads it: C-contiguous float32 or float64.

    ``dtype=None`` keeps float32 data in float32 and makes everything else float64; the same
    object comes back when nothing needs converting, else one deliberate copy.
    """
    if dtype is None:
        dtype = np.float32 if is_float32(X) else np.float64
    try:
        with np.errstate(over="raise"):
            return np.ascontiguousarray(X, dtype=dtype)
    except FloatingPointError:
        raise ValueError(f"X has values beyond the range of {np.dtype(dtype).name}; keep it in "
                         "float64 (dtype=None)") from None


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise a ValueError that says where, when ``array`` holds a NaN or an infinity."""
    # A sum is finite exactly when no entry is NaN or inf, unless it overflows; it needs no
    # temporary the size of the array, which matters for a data set of several GB.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        where = ", ".join(str(i) for i in bad[0])
        raise ValueError(
            f"{name} contains NaN or inf (first at index [{where}]); remove or impute those "
            "samples before fitting."
        )


def canonical_factors(W: np.ndarray, U: np.ndarray):
    """``W U^T = W' V^T`` with orthonormal V and ``W' = P diag(singular values)``, descending."""
    Q, R = np.linalg.qr(U)
    P, S, Zt = np.linalg.svd(W @ R.T, full_matrices=False)
    return P * S, Q @ Zt.T, S
