"""The truncated SVD kernel against LAPACK's full SVD."""

import numpy as np
import pytest

import metasp
from metasp import kernels, reference


def matrix_with_spectrum(T, d, singular_values, seed):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((T, len(singular_values))))[0]
    V = np.linalg.qr(rng.standard_normal((d, len(singular_values))))[0]
    return (U * singular_values) @ V.T


def assert_matches_exact(svd, A, s, atol):
    exact = reference.truncated_svd(A, s)
    np.testing.assert_allclose(svd.singular_values, exact.singular_values, rtol=1e-10)
    np.testing.assert_allclose(svd.V @ svd.V.T, exact.V @ exact.V.T, rtol=0, atol=atol)
    np.testing.assert_allclose(svd.W @ svd.V.T, exact.W @ exact.V.T, rtol=0,
                               atol=atol * exact.singular_values[0])
    np.testing.assert_allclose(svd.V.T @ svd.V, np.eye(s), atol=1e-12)


@pytest.mark.parametrize("shape", [(300, 80), (80, 300), (2000, 40)])
@pytest.mark.parametrize("s", [1, 3, 7])
def test_random_matrices(shape, s):
    A = np.random.default_rng(0).standard_normal(shape)
    svd = kernels.truncated_svd(A, s, random_state=0)
    assert svd.converged
    assert_matches_exact(svd, A, s, atol=1e-9)


def test_small_gap_after_s():
    # sigma_3 / sigma_4 = 1.0005: the top-3 subspace is ill-conditioned but well defined.
    spectrum = np.array([10, 5, 2, 1.999, 1.5, 1.4, 1.3, 1.2, 1.1, 1, 0.9, 0.8, 0.5, 0.3])
    A = matrix_with_spectrum(500, 60, spectrum, seed=1)
    svd = kernels.truncated_svd(A, 3, random_state=0)
    assert svd.converged
    assert_matches_exact(svd, A, 3, atol=1e-6)


def test_warm_start_from_a_very_different_subspace():
    rng = np.random.default_rng(2)
    spectrum = np.array([9.0, 7.0, 6.0, 3.0, 2.0, 1.0, 0.5])
    A_old = matrix_with_spectrum(400, 300, spectrum, seed=3)
    A_new = matrix_with_spectrum(400, 300, spectrum, seed=4)  # unrelated subspace
    old = kernels.truncated_svd(A_old, 3, random_state=0)
    new = kernels.truncated_svd(A_new, 3, warm_start=old.basis, random_state=0)
    assert new.converged
    assert_matches_exact(new, A_new, 3, atol=1e-9)
    # A slightly moved matrix: the warm start makes it cheap.
    moved = A_new + 1e-3 * rng.standard_normal(A_new.shape)
    again = kernels.truncated_svd(moved, 3, warm_start=new.basis, random_state=0)
    cold = kernels.truncated_svd(moved, 3, random_state=0)
    assert again.n_steps < cold.n_steps
    assert_matches_exact(again, moved, 3, atol=1e-9)


def test_exact_path_for_tiny_problems():
    A = np.random.default_rng(5).standard_normal((30, 6))  # d = 6 <= block size: one exact step
    svd = kernels.truncated_svd(A, 2, random_state=0)
    assert svd.n_steps == 1 and svd.converged
    assert_matches_exact(svd, A, 2, atol=1e-12)


def test_rank_deficient_and_zero_matrices():
    A = matrix_with_spectrum(100, 40, np.array([3.0, 2.0]), seed=6)  # rank 2, ask for 4
    svd = kernels.truncated_svd(A, 4, random_state=0)
    np.testing.assert_allclose(svd.singular_values, [3, 2, 0, 0], atol=1e-12)
    np.testing.assert_allclose(svd.W @ svd.V.T, A, atol=1e-12)
    zero = kernels.truncated_svd(np.zeros((20, 10)), 2, random_state=0)
    assert zero.converged
    np.testing.assert_array_equal(zero.singular_values, 0)


def test_deterministic_for_a_seed_and_any_thread_count():
    A = np.random.default_rng(7).standard_normal((30000, 40))  # parallel loops engage
    one = kernels.truncated_svd(A, 4, random_state=11, n_jobs=1)
    two = kernels.truncated_svd(A, 4, random_state=11, n_jobs=2)
    np.testing.assert_array_equal(one.V, two.V)
    np.testing.assert_array_equal(one.singular_values, two.singular_values)


def test_max_steps_caps_the_iteration():
    A = np.random.default_rng(8).standard_normal((300, 200))  # flat spectrum: slow
    svd = kernels.truncated_svd(A, 3, max_steps=2, random_state=0)
    assert svd.n_steps == 2 and not svd.converged


def test_switches_to_the_exact_path_when_iterating_would_cost_more():
    # Flat spectrum: subspace iteration would need dozens of steps; the Gram matrix is cheaper.
    A = np.random.default_rng(9).standard_normal((400, 100))
    svd = kernels.truncated_svd(A, 3, random_state=0)
    assert svd.converged and svd.n_steps <= 5
    assert_matches_exact(svd, A, 3, atol=1e-9)


def test_solver_svd_tolerance_relative_to_the_step(monkeypatch):
    # Inside metasp.fit the SVD stops at SVD_RELATIVE_TOL times the iterate's last relative
    # change: fewer subspace steps, the same fixed point.
    X, y, B, _ = metasp.datasets.make_hps(T=300, m=15, d=60, s=4, sigma=0.1, random_state=1)
    loose = metasp.fit(X, y, 4, heads="fixed", random_state=0)
    monkeypatch.setattr(metasp._solver, "SVD_RELATIVE_TOL", 0.0)
    strict = metasp.fit(X, y, 4, heads="fixed", random_state=0)
    assert loose.status == strict.status == "converged"
    assert abs(loose.n_iter - strict.n_iter) <= 1
    assert np.mean(loose.history["svd_steps"]) < np.mean(strict.history["svd_steps"])
    np.testing.assert_allclose(loose.Theta, strict.Theta, rtol=0,
                               atol=1e-9 * np.abs(strict.Theta).max())


# A^T A under- or overflows long before A does: the SVD rescales A by a power of two (exact)
# instead of returning NaN as converged. Both paths: the exact one (small d) and iteration.
@pytest.mark.parametrize("shape", [(20, 10), (400, 120)])
@pytest.mark.parametrize("scale", [2.0**-1000, 1e-300, 1e-160, 1e160, 1e300, -1e300])
def test_any_representable_scale(shape, scale):
    base = matrix_with_spectrum(*shape, [5.0, 3.0, 1.0, 0.5], seed=2)
    svd = kernels.truncated_svd(base * scale, 2, random_state=0)
    exact = kernels.truncated_svd(base, 2, random_state=0)
    assert svd.converged
    assert np.isfinite(svd.V).all() and np.isfinite(svd.W).all()
    np.testing.assert_allclose(svd.V.T @ svd.V, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(svd.V @ svd.V.T, exact.V @ exact.V.T, atol=1e-8)
    np.testing.assert_allclose(svd.singular_values, abs(scale) * exact.singular_values,
                               rtol=1e-8)


def test_constant_matrix_near_the_top_of_the_range():
    svd = kernels.truncated_svd(np.full((20, 10), -1e300), 2, random_state=0)
    assert svd.converged and np.isfinite(svd.singular_values).all()
    assert svd.singular_values[0] == pytest.approx(np.sqrt(200) * 1e300, rel=1e-12)


def test_singular_values_beyond_float64_raise():
    with pytest.raises(OverflowError, match=r"top singular values of A exceed the float64 "
                                            r"range \(its largest entry is 1.7e\+308\)"):
        kernels.truncated_svd(np.full((200, 100), 1.7e308), 2)
