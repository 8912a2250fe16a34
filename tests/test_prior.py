"""Heads for few shots: adapt(prior=...) and the empirical prior fitted by fit_prior."""

import warnings

import numpy as np
import pytest
from conftest import ragged_tasks

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
    from metasp._prior import compiled_em_step as _em_step
    from metasp._prior import task_sufficient_statistics

    result, _ = fitted
    X, y, *_ = random_effects_tasks()
    tasks = metasp.Tasks.from_array(X, y)
    statistics = task_sufficient_statistics(tasks, result.B)

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


def random_statistics(T, s, seed, sizes=(1, 15)):
    """Per-task statistics of random regressions in an s-dimensional subspace, some tasks with
    fewer samples than s (a singular Z_t^T Z_t)."""
    rng = np.random.default_rng(seed)
    m = rng.integers(sizes[0], sizes[1] + 1, size=T)
    Z = [rng.standard_normal((k, s)) for k in m]
    y = [z @ (1 + rng.standard_normal(s)) + 0.3 * rng.standard_normal(len(z)) for z in Z]
    gram = np.stack([z.T @ z for z in Z])
    cross = np.stack([z.T @ v for z, v in zip(Z, y)])
    squares = np.array([v @ v for v in y])
    return (gram, cross, squares), float(m.sum())


def random_params(s, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((s, s))
    return rng.standard_normal(s), A @ A.T / s + 0.1 * np.eye(s), 0.05 + rng.random()


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8, 9, 12])
def test_compiled_em_step_matches_numpy(s):
    from metasp._prior import compiled_em_step as _em_step

    # s <= 8 runs the fixed-size instantiations, 9 and 12 the run-time-size one.
    statistics, n = random_statistics(300, s, seed=s)
    for seed in range(3):
        params = random_params(s, seed)
        for floor in (0.0, 1e-6):
            (mean, cov, noise), log_likelihood = _em_step(params, statistics, n, floor)
            (mean_ref, cov_ref, noise_ref), log_likelihood_ref = \
                metasp.reference.head_prior_em_step(params, statistics, n, floor)
            np.testing.assert_allclose(mean, mean_ref, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(cov, cov_ref, rtol=1e-12, atol=1e-14)
            assert noise == pytest.approx(noise_ref, rel=1e-12)
            assert log_likelihood == pytest.approx(log_likelihood_ref, rel=1e-12)


def test_compiled_em_step_falls_back_to_lu_where_cholesky_fails():
    from metasp._prior import compiled_em_step as _em_step

    # Statistics no data give (negative "Gram" matrices) make some posterior precisions
    # indefinite: the Cholesky factorisation fails there and the LU path takes over; the
    # NumPy step (LU throughout, log |det|) computes the same formulas.
    (gram, cross, squares), n = random_statistics(50, 3, seed=0)
    gram = gram.copy()
    gram[::7] = -10 * np.eye(3)
    params = (np.zeros(3), np.eye(3), 1.0)
    (mean, cov, noise), log_likelihood = _em_step(params, (gram, cross, squares), n, 0.0)
    (mean_ref, cov_ref, noise_ref), log_likelihood_ref = metasp.reference.head_prior_em_step(
        params, (gram, cross, squares), n, 0.0)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-12)
    assert noise == pytest.approx(noise_ref, rel=1e-12)
    assert log_likelihood == pytest.approx(log_likelihood_ref, rel=1e-12)


def test_compiled_em_step_does_not_depend_on_the_thread_count():
    from metasp._prior import compiled_em_step as _em_step

    # Enough work (T s^2 (s + 4) > 2^20) for the E-step to run in parallel.
    statistics, n = random_statistics(5000, 5, seed=1)
    params = random_params(5, 0)
    one, two = (_em_step(params, statistics, n, 0.0, n_threads) for n_threads in (1, 2))
    for a, b in zip(one[0], two[0]):
        np.testing.assert_array_equal(a, b)
    assert one[1] == two[1]


@pytest.mark.parametrize("case", ["random_effects", "hps", "ragged"])
def test_head_prior_matches_the_numpy_em(case):
    from metasp._prior import fit_head_prior, task_sufficient_statistics

    # SQUAREM's result at tol = 1e-5 depends on rounding: where an extrapolation is accepted
    # or rejected by a hair, any change of rounding (the NumPy step itself with its sums over
    # other blocks of tasks) moves it by up to ~1e-5 (measured on the test suite's fits: 20% of
    # them move by more than 1e-10 either way). These cases are decided clearly at tol = 1e-5;
    # the ragged one (singular Z_t^T Z_t for tasks with fewer than 3 samples) is compared at
    # its fixed point. EM converges slowly there: stopped at a relative change of 1e-12 the two
    # were still 5e-9 apart (on an Intel Xeon), run on to 1e-15 they agree to 4e-14.
    tol, rtol, max_iter = 1e-5, 1e-10, 3000
    if case == "random_effects":
        X, y, *_ = random_effects_tasks()
        s = 2
    elif case == "hps":
        X, y, *_ = metasp.datasets.make_hps(T=200, m=15, d=30, s=4, sigma=0.3, random_state=0)
        s = 4
    else:
        X, y, *_ = ragged_tasks(T=300, d=10, s=3, sigma=0.2, sizes=(1, 30))
        s, tol, rtol, max_iter = 3, 1e-15, 1e-12, 20000
    tasks = metasp.Tasks.from_list(X, y) if case == "ragged" else metasp.Tasks.from_array(X, y)
    B = np.linalg.qr(np.random.default_rng(0).standard_normal((tasks.n_features, s)))[0].T
    statistics = task_sufficient_statistics(tasks, B)
    compiled = fit_head_prior(statistics, tasks.n_samples, max_iter=max_iter, tol=tol)
    numpy = metasp.reference.fit_head_prior(statistics, tasks.n_samples, max_iter=max_iter,
                                            tol=tol)
    for ours, theirs in zip(compiled, numpy):  # relative to the norm of each parameter
        assert np.linalg.norm(ours - theirs) <= rtol * np.linalg.norm(theirs)


# A perfect fit (zero residuals) is valid data: the head prior floors the noise variance at
# VARIANCE_FLOOR times the targets' mean square (VARIANCE_FLOOR itself when every target is 0)
# instead of failing with "noise must be positive".
def test_all_zero_targets_get_a_floored_prior():
    from metasp._prior import VARIANCE_FLOOR

    X, _, _, _ = metasp.datasets.make_hps(T=40, m=10, d=8, s=2, random_state=0)
    y = np.zeros(X.shape[:2])
    for heads in ("random", "fixed"):
        result = metasp.fit(X, y, 2, heads=heads, random_state=0)
        assert result.noise_variance == pytest.approx(VARIANCE_FLOOR)
        assert np.isfinite(result.head_cov).all() and np.linalg.eigvalsh(result.head_cov).min() > 0
        np.testing.assert_array_equal(result.head_mean, 0)
        np.testing.assert_array_equal(result.adapt(X[0], y[0]), 0)
    bare = metasp.baselines.mom(X, y, 2)
    bare.fit_prior(X, y)
    assert bare.noise_variance == pytest.approx(VARIANCE_FLOOR)


@pytest.mark.parametrize("factor", [1e-100, 1e-160])
def test_tiny_targets_are_not_rejected_by_the_prior(noiseless, factor):
    """y scaled to 1e-160 once failed with "noise must be positive and finite"; now the prior is
    fitted, and either stored (where float64 holds it in the data's units) or left unset with a
    DiagnosticWarning saying so."""
    X, y, _, _ = noiseless
    for heads in ("random", "fixed"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = metasp.fit(X, y * factor, 3, heads=heads, random_state=0)
        assert result.status == "converged"
        messages = [str(w.message) for w in caught]
        if result.noise_variance is None:
            assert any("head prior is beyond the float64 range" in m for m in messages)
            assert [d.code for d in result.diagnostics] == ["prior_out_of_range"]
        else:
            assert not messages
            assert 0 < result.noise_variance < 1e-10 * factor**2
            assert np.isfinite(result.head_cov).all()


def test_noiseless_statistics_floor_the_noise():
    """The EM fit straight from statistics with zero residuals, small, or no targets at all."""
    from metasp._prior import VARIANCE_FLOOR, fit_head_prior

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((30, 6, 2))
    w = rng.standard_normal((30, 2))
    y = np.einsum("tms,ts->tm", Z, w)
    gram = np.einsum("tms,tmr->tsr", Z, Z)
    for targets in (y, 0 * y, 1e-100 * y):
        cross = np.einsum("tms,tm->ts", Z, targets)
        squares = np.sum(targets**2, axis=1)
        mean, cov, noise = fit_head_prior((gram, cross, squares), 180)
        scale = max(np.mean(targets**2), 0) or 1.0
        assert 0 < noise <= 1.01 * VARIANCE_FLOOR * scale
        assert np.isfinite(mean).all() and np.isfinite(cov).all()
