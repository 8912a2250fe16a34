"""Heads for few shots: adapt(prior=...) and the empirical prior fitted by fit_prior."""

import numpy as np
import pytest

import metasp
from metasp import MetaSPResult


def random_effects_tasks(T=400, m=12, d=8, s=2, sigma=0.3, seed=0):
    """Heads w_t ~ N(mu, Sigma) in a fixed subspace B; returns tasks and the truth."""
    rng = np.random.default_rng(seed)
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    mu = np.array([2.0, -1.0])[:s]
    L = np.array([[0.5, 0.0], [0.3, 0.2]])[:s, :s]
    W = mu + rng.standard_normal((T, s)) @ L.T
    X = rng.standard_normal((T, m, d))
    y = np.einsum("tmd,td->tm", X, W @ B) + sigma * rng.standard_normal((T, m))
    return X, y, B, W, mu, L @ L.T, sigma**2


@pytest.fixture(scope="module")
def fitted():
    X, y, B, W, mu, cov, noise = random_effects_tasks()
    return metasp.fit(X, y, 2, random_state=0), (B, mu, cov, noise)


def test_fit_sets_an_empirical_prior_close_to_the_truth(fitted):
    result, (B, mu, cov, noise) = fitted
    assert result.noise_variance == pytest.approx(noise, rel=0.08)
    # The prior lives in the fitted basis: compare in the true basis.
    rotation = B @ result.B.T  # (s, s), nearly orthogonal
    np.testing.assert_allclose(rotation @ result.head_mean, mu, atol=0.05)
    np.testing.assert_allclose(rotation @ result.head_cov @ rotation.T, cov, atol=0.06)


def test_em_prior_removes_the_estimation_noise_of_the_training_heads(fitted):
    result, _ = fitted
    raw = np.cov(result.W.T)
    assert np.trace(result.head_cov) < np.trace(raw)


def test_empirical_posterior_mean_equals_the_direct_formula(fitted):
    result, _ = fitted
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((3, result.n_features)), rng.standard_normal(3)
    Z = X @ result.B.T
    S, mu, s2 = result.head_cov, result.head_mean, result.noise_variance
    # Posterior N(m, C) of w given y = Z w + e: C = (Z'Z/s2 + S^-1)^-1, m = C (Z'y/s2 + S^-1 mu).
    C = np.linalg.inv(Z.T @ Z / s2 + np.linalg.inv(S))
    expected = C @ (Z.T @ y / s2 + np.linalg.solve(S, mu))
    np.testing.assert_allclose(result.adapt(X, y), expected, rtol=1e-10)
    np.testing.assert_allclose(result.adapt(X, y, prior="empirical"), expected, rtol=1e-10)


def test_with_many_samples_all_priors_agree(fitted):
    result, (B, _, _, noise) = fitted
    rng = np.random.default_rng(6)
    X = rng.standard_normal((20000, result.n_features))
    y = X @ (B.T @ np.array([1.0, 0.5])) + np.sqrt(noise) * rng.standard_normal(20000)
    heads = [result.adapt(X, y, prior="empirical"), result.adapt(X, y, prior="none"),
             result.adapt(X, y, prior="ridge", ridge=1.0), result.adapt(X, y, ridge=1.0)]
    for w in heads[1:]:
        np.testing.assert_allclose(w, heads[0], atol=1e-3)


def test_with_one_or_two_samples_the_head_shrinks_toward_the_prior_mean(fitted):
    result, _ = fitted
    rng = np.random.default_rng(7)
    far = result.head_mean + np.array([4.0, -4.0])
    for m in (1, 2):
        X = rng.standard_normal((m, result.n_features))
        y = X @ (result.B.T @ far)
        w = result.adapt(X, y)
        least_squares = result.adapt(X, y, prior="none")
        # Between the prior mean and the data: closer to the mean than least squares is.
        assert np.linalg.norm(w - result.head_mean) < np.linalg.norm(least_squares
                                                                     - result.head_mean)
        # And it moved toward the data.
        Z = X @ result.B.T
        assert np.linalg.norm(y - Z @ w) < np.linalg.norm(y - Z @ result.head_mean)


def test_empirical_prior_beats_least_squares_with_few_shots(fitted):
    result, (B, mu, cov, noise) = fitted
    rng = np.random.default_rng(8)
    errors = {"empirical": 0.0, "none": 0.0}
    for _ in range(200):
        w_true = rng.multivariate_normal(mu, cov)
        X = rng.standard_normal((2, result.n_features))
        y = X @ (B.T @ w_true) + np.sqrt(noise) * rng.standard_normal(2)
        for prior in errors:
            errors[prior] += np.sum((result.B.T @ result.adapt(X, y, prior=prior)
                                     - B.T @ w_true) ** 2)
    assert errors["empirical"] < 0.5 * errors["none"]


def test_a_result_without_prior_says_how_to_get_one(fitted):
    result, _ = fitted
    X, y, *_ = random_effects_tasks(T=30, seed=1)
    bare = MetaSPResult(B=result.B, W=result.W[:30], Theta=result.Theta[:30],
                        singular_values=result.singular_values, n_iter=0, status="converged")
    with pytest.raises(ValueError, match=r"call result.fit_prior\(Xs, ys\)"):
        bare.adapt(X[0], y[0])
    np.testing.assert_allclose(bare.adapt(X[0], y[0], prior="none"),
                               result.adapt(X[0], y[0], prior="none"))
    assert bare.fit_prior(X, y) is bare
    assert bare.noise_variance > 0 and bare.head_cov.shape == (2, 2)
    assert np.isfinite(bare.adapt(X[0], y[0])).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"prior": "bayes"}, "prior must be 'empirical', 'ridge' or 'none'"),
    ({"prior": "ridge"}, "needs a strength"),
    ({"prior": "none", "ridge": 1.0}, "only applies with prior='ridge'"),
    ({"prior": "empirical", "ridge": 0.0}, "only applies with prior='ridge'"),
])
def test_adapt_rejects_inconsistent_prior_arguments(fitted, kwargs, match):
    result, _ = fitted
    X = np.ones((3, result.n_features))
    with pytest.raises(ValueError, match=match):
        result.adapt(X, np.ones(3), **kwargs)


def test_fit_prior_rejects_other_tasks(fitted):
    result, _ = fitted
    X, y, *_ = random_effects_tasks(T=30, seed=1)
    with pytest.raises(ValueError, match="heads for 400 tasks but 30"):
        result.fit_prior(X, y)
    with pytest.raises(ValueError, match="features"):
        result.fit_prior(X[:, :, :5], y)


def test_noiseless_data_gives_a_tiny_positive_noise_variance(noiseless):
    X, y, B, W = noiseless
    result = metasp.fit(X, y, 3, random_state=0)
    assert 0 < result.noise_variance < 1e-10


def test_prior_depends_on_the_subspace_not_on_its_basis_or_on_W(fitted):
    result, _ = fitted
    X, y, *_ = random_effects_tasks()
    rotation = np.linalg.qr(np.random.default_rng(9).standard_normal((2, 2)))[0]
    other = MetaSPResult(B=rotation @ result.B, W=np.zeros_like(result.W), Theta=result.Theta,
                         singular_values=result.singular_values, n_iter=0, status="converged")
    other.fit_prior(X, y, tol=1e-10, max_iter=3000)
    result = MetaSPResult(B=result.B, W=result.W, Theta=result.Theta,
                          singular_values=result.singular_values, n_iter=0,
                          status="converged").fit_prior(X, y, tol=1e-10, max_iter=3000)
    np.testing.assert_allclose(other.noise_variance, result.noise_variance, rtol=1e-6)
    np.testing.assert_allclose(other.head_mean, rotation @ result.head_mean, atol=1e-6)
    np.testing.assert_allclose(other.head_cov, rotation @ result.head_cov @ rotation.T,
                               atol=1e-6)
    X_new, y_new = X[0, :2], y[0, :2]
    np.testing.assert_allclose(other.predict(X[0], other.adapt(X_new, y_new)),
                               result.predict(X[0], result.adapt(X_new, y_new)), atol=1e-6)


def test_the_prior_maximises_the_marginal_likelihood(fitted):
    from metasp._result import _em_step, _task_sufficient_statistics

    result, _ = fitted
    X, y, *_ = random_effects_tasks()
    tasks = metasp.Tasks.from_array(X, y)
    statistics = _task_sufficient_statistics(tasks, result.B)

    def log_likelihood(mean, cov, noise):
        return _em_step((mean, cov, noise), statistics, tasks.n_samples, 0.0)[1]

    best = log_likelihood(result.head_mean, result.head_cov, result.noise_variance)
    rng = np.random.default_rng(10)
    for _ in range(10):
        bump = 0.02 * rng.standard_normal((2, 2))
        assert log_likelihood(result.head_mean + 0.02 * rng.standard_normal(2),
                              result.head_cov + bump @ bump.T,
                              result.noise_variance * (1 + 0.02 * rng.standard_normal())) < best
    # and the log-likelihood agrees with the direct Gaussian density of one task's targets
    Z = X @ result.B.T
    V = result.noise_variance * np.eye(12)[None] + Z @ result.head_cov @ Z.transpose(0, 2, 1)
    r = y - Z @ result.head_mean
    direct = -0.5 * sum(np.linalg.slogdet(V[t])[1] + r[t] @ np.linalg.solve(V[t], r[t])
                        for t in range(len(y)))
    assert best == pytest.approx(direct, rel=1e-10)
