"""With a fixed step, metasp.fit runs the paper's Meta-SP loop exactly, to rounding.

The paper's iteration: Theta <- H_s(Theta + gamma / m_t X_t^T (y_t - X_t theta_t)), with H_s
the rank-s truncation by an exact SVD, from Theta = 0. metasp's truncated SVD is iterative;
with a fixed step it runs to its strict tolerance, so the iterates agree with the exact-SVD
loop to rounding even after many iterations.
"""

import numpy as np
import pytest

import metasp


def paper_loop(Xs, ys, s, gamma, n_iter):
    T, m, d = Xs.shape
    Theta = np.zeros((T, d))
    for _ in range(n_iter):
        residuals = ys - np.einsum("tmd,td->tm", Xs, Theta)
        A = Theta + gamma / m * np.einsum("tmd,tm->td", Xs, residuals)
        U, S, Vt = np.linalg.svd(A, full_matrices=False)
        Theta = (U[:, :s] * S[:s]) @ Vt[:s]
    return Theta


@pytest.mark.parametrize("gamma", [0.5, 0.25])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_fixed_step_matches_the_papers_loop(gamma, n_jobs):
    T, m, d, s, sigma, n_iter = 120, 30, 25, 3, 0.05, 40
    rng = np.random.default_rng(7)
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    Xs = rng.standard_normal((T, m, d))
    ys = np.einsum("tmd,td->tm", Xs, rng.standard_normal((T, s)) @ B)
    ys += sigma * rng.standard_normal((T, m))

    result = metasp.fit(list(Xs), list(ys), s, step=gamma, tol=0, init="zero",
                        max_iter=n_iter, n_jobs=n_jobs)
    expected = paper_loop(Xs, ys, s, gamma, n_iter)

    assert result.n_iter == n_iter
    error = np.linalg.norm(result.Theta - expected) / np.linalg.norm(expected)
    assert error < 1e-12, error
