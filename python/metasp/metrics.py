"""Distances between subspaces and coefficient matrices, as used in the Meta-SP literature.

Subspaces are given as (s, d) arrays whose rows span them; rows need not be orthonormal (they
are orthonormalised first), so only the row spaces are compared.
"""

from __future__ import annotations

import numpy as np

from ._validation import orthonormal_rows

__all__ = ["frobenius_error", "sin_angle", "subspace_distance"]


def _pair(B1, B2, names):
    Q1 = orthonormal_rows(B1, names[0])
    Q2 = orthonormal_rows(B2, names[1], Q1.shape[1])
    return Q1, Q2


def sin_angle(B1, B2) -> float:
    r"""Sine of the largest principal angle between the row spaces of ``B1`` and ``B2``.

    .. math:: \sin\angle(B_1, B_2) = \|(I - B_2^\top B_2) B_1^\top\|_2
              = \sqrt{1 - \sigma_{\min}(B_1 B_2^\top)^2}

    for orthonormal rows of equal count; the first form, used here, stays accurate for tiny
    angles. With fewer rows in ``B1`` it measures how far ``B1`` is from lying inside ``B2``.

    Parameters
    ----------
    B1, B2 : array_like of shape (s1, d) and (s2, d)

    Returns
    -------
    float in [0, 1]
    """
    Q1, Q2 = _pair(B1, B2, ("B1", "B2"))
    outside = Q1.T - Q2.T @ (Q2 @ Q1.T)
    return float(min(np.linalg.norm(outside, 2), 1.0))


def subspace_distance(B_hat, B_star) -> float:
    r"""Normalised Frobenius distance :math:`\|(I - B_*^\top B_*)\hat B^\top\|_F / \sqrt{s}`.

    Parameters
    ----------
    B_hat : array_like of shape (s, d)
        Estimated subspace.
    B_star : array_like of shape (s_star, d)
        True subspace.

    Returns
    -------
    float in [0, 1]
    """
    Q_hat, Q_star = _pair(B_hat, B_star, ("B_hat", "B_star"))
    outside = Q_hat.T - Q_star.T @ (Q_star @ Q_hat.T)
    return float(np.linalg.norm(outside) / np.sqrt(Q_hat.shape[0]))


def frobenius_error(Theta_hat, Theta_star) -> float:
    r"""Root mean squared coefficient error over tasks, :math:`\|\hat\Theta - \Theta_*\|_F/\sqrt{T}`.

    Parameters
    ----------
    Theta_hat, Theta_star : array_like of shape (T, d)

    Returns
    -------
    float
    """
    Theta_hat = np.asarray(Theta_hat, dtype=np.float64)
    Theta_star = np.asarray(Theta_star, dtype=np.float64)
    if Theta_hat.ndim != 2 or Theta_hat.shape != Theta_star.shape:
        raise ValueError(
            f"Theta_hat and Theta_star must be 2-D of the same shape (T, d); got "
            f"{Theta_hat.shape} and {Theta_star.shape}"
        )
    return float(np.linalg.norm(Theta_hat - Theta_star) / np.sqrt(Theta_hat.shape[0]))
