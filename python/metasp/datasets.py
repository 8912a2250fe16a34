"""Data for trying metasp: simulated multi-task regression."""

from __future__ import annotations

import numpy as np

from ._validation import is_integer, is_real

__all__ = ["make_hps"]


def make_hps(T, m, d, s, sigma=0.0, random_state=None):
    r"""Simulate tasks from the hard-parameter-sharing model.

    :math:`y_t = X_t B^\top w_t + \sigma \varepsilon_t` with standard normal features
    :math:`X_t`, heads :math:`w_t \sim N(0, I_s)`, noise :math:`\varepsilon_t \sim N(0, I_m)`,
    and :math:`B` a uniformly random (s, d) matrix with orthonormal rows.

    Parameters
    ----------
    T, m, d, s : int
        Tasks, samples per task, features, rank (``1 <= s <= d``).
    sigma : float, default 0.0
        Noise standard deviation.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    X : ndarray of shape (T, m, d)
    y : ndarray of shape (T, m)
    B : ndarray of shape (s, d), orthonormal rows
    W : ndarray of shape (T, s)

    Examples
    --------
    >>> from metasp.datasets import make_hps
    >>> X, y, B, W = make_hps(T=100, m=10, d=20, s=2, sigma=0.1, random_state=0)
    >>> X.shape, y.shape, B.shape, W.shape
    ((100, 10, 20), (100, 10), (2, 20), (100, 2))
    """
    for name, value in (("T", T), ("m", m), ("d", d), ("s", s)):
        if not is_integer(value):
            raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}")
    if s > d:
        raise ValueError(f"the rank s = {s} cannot exceed the number of features d = {d}")
    if not is_real(sigma) or not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative finite number; got {sigma!r}")
    rng = np.random.default_rng(random_state)
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    W = rng.standard_normal((T, s))
    X = rng.standard_normal((T, m, d))
    y = np.einsum("tmd,td->tm", X, W @ B) + sigma * rng.standard_normal((T, m))
    return X, y, np.ascontiguousarray(B), W
