"""New-task adaptation, the subspace metrics and the simulated data."""

import numpy as np
import pytest

import metasp
from metasp.metrics import frobenius_error, sin_angle, subspace_distance


@pytest.fixture
def fitted(noiseless):
    X, y, B, W = noiseless
    return metasp.fit(X, y, 3, random_state=0), B


def new_task(B, m, seed):
    rng = np.random.default_rng(seed)
    w, X = rng.standard_normal(B.shape[0]), rng.standard_normal((m, B.shape[1]))
    return X, X @ (B.T @ w), w


def test_adapt_recovers_a_new_task_from_few_shots(fitted):
    result, B = fitted
    X, y, w_true = new_task(B, m=5, seed=1)  # 5 samples, d = 50 features
    w = result.adapt(X, y)
    np.testing.assert_allclose(result.B.T @ w, B.T @ w_true, atol=1e-6)
    X_test, y_test, _ = new_task(B, m=100, seed=1)
    np.testing.assert_allclose(result.predict(X_test, w), y_test, atol=1e-5)


def test_adapt_without_prior_and_fewer_samples_than_the_rank_is_minimum_norm(fitted):
    result, B = fitted
    X, y, _ = new_task(B, m=2, seed=2)
    w = result.adapt(X, y, prior="none")
    features = X @ result.B.T
    np.testing.assert_allclose(features @ w, y, atol=1e-10)  # interpolates
    np.testing.assert_allclose(w, np.linalg.pinv(features) @ y, atol=1e-10)


def test_adapt_with_ridge(fitted):
    result, B = fitted
    X, y, _ = new_task(B, m=4, seed=3)
    Z = X @ result.B.T
    w = result.adapt(X, y, ridge=0.7)
    np.testing.assert_allclose(w, np.linalg.solve(Z.T @ Z + 0.7 * np.eye(3), Z.T @ y))
    assert np.linalg.norm(w) < np.linalg.norm(result.adapt(X, y))


def test_heads_of_training_tasks_predict_them(noiseless, fitted):
    X, y, _, _ = noiseless
    result, _ = fitted
    np.testing.assert_allclose(result.predict(X[4], result.W[4]), y[4], atol=1e-6)
    assert "status='converged'" in repr(result)


def test_sin_angle_known_values():
    e = np.eye(4)
    assert sin_angle(e[:2], e[:2]) == 0
    assert sin_angle(e[:2], e[2:]) == pytest.approx(1)
    for angle in (0.3, 1e-10):
        rotated = np.array([[np.cos(angle), np.sin(angle), 0, 0], [0, 0, 1, 0]])
        assert sin_angle(rotated, e[[0, 2]]) == pytest.approx(np.sin(angle), rel=1e-6)
        assert sin_angle(e[[0, 2]], rotated) == pytest.approx(np.sin(angle), rel=1e-6)


def test_metrics_compare_row_spaces_only():
    rng = np.random.default_rng(0)
    B1, B2 = rng.standard_normal((3, 10)), rng.standard_normal((3, 10))
    mix = rng.standard_normal((3, 3))
    assert sin_angle(mix @ B1, B2) == pytest.approx(sin_angle(B1, B2), rel=1e-10)
    assert subspace_distance(B1, mix @ B1) < 1e-12
    # subspace distance averages what the sine angle takes the maximum of
    assert subspace_distance(B1, B2) <= sin_angle(B1, B2) + 1e-12
    e = np.eye(4)
    assert subspace_distance(e[:2], e[[0, 2]]) == pytest.approx(np.sqrt(0.5))


def test_frobenius_error():
    A = np.zeros((4, 3))
    B = np.ones((4, 3))
    assert frobenius_error(A, B) == pytest.approx(np.sqrt(12 / 4))


def test_make_hps():
    X, y, B, W = metasp.datasets.make_hps(T=40, m=7, d=9, s=2, random_state=3)
    assert X.shape == (40, 7, 9) and y.shape == (40, 7) and B.shape == (2, 9) and W.shape == (40, 2)
    np.testing.assert_allclose(B @ B.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(y, np.einsum("tmd,td->tm", X, W @ B), atol=1e-12)
    again = metasp.datasets.make_hps(T=40, m=7, d=9, s=2, random_state=3)
    np.testing.assert_array_equal(again[0], X)
    noisy = metasp.datasets.make_hps(T=2000, m=7, d=9, s=2, sigma=0.5, random_state=3)
    residual = noisy[1] - np.einsum("tmd,td->tm", noisy[0], noisy[3] @ noisy[2])
    assert residual.std() == pytest.approx(0.5, rel=0.05)
