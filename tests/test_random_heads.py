"""The default estimator: random heads (maximum marginal likelihood), where data are scarce."""

import warnings

import numpy as np
import pytest
from conftest import ragged_tasks

import metasp
from metasp import _random_heads, baselines, kernels, reference
from metasp.metrics import sin_angle


def scarce(T, m, d, s, seed, sigma=1.0):
    """The scarce-data benchmark's model: orthonormal B, heads N(0, I), noise N(0, sigma^2)."""
    rng = np.random.default_rng(seed)
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    W = rng.standard_normal((T, s))
    X = rng.standard_normal((T, m, d))
    y = np.einsum("tmd,td->tm", X, W @ B) + sigma * rng.standard_normal((T, m))
    return X, y, B


def best_trace_norm(tasks, s, B):
    """The trace norm tuned in hindsight: the lowest sin angle over a grid of weights."""
    base = baselines.default_lambda(tasks, 1.0)
    angles = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        for k in np.arange(-3, 2.5, 0.5):
            try:
                fit = baselines.nuclear_norm(tasks, None, s, lam=base * 2**k, max_iter=3000)
            except ValueError:  # so large that the solution is 0
                continue
            angles.append(sin_angle(fit.B, B))
    return min(angles)


# ------------------------------------------------------------------ the compiled kernel


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_marginal_pass_matches_the_numpy_twin(dtype):
    Xs, ys, _, _ = ragged_tasks(T=40, d=12, s=3, sigma=0.3, sizes=(1, 9))
    tasks = metasp.Tasks.from_list(Xs, ys, dtype=dtype)
    U = np.random.default_rng(0).standard_normal((12, 3)) * 0.4
    compiled = kernels.marginal_pass(tasks, U, 0.2)
    numpy = reference.marginal_pass(tasks, U, 0.2)
    assert compiled.deviance == pytest.approx(numpy.deviance, rel=1e-12)
    assert compiled.expected == pytest.approx(numpy.expected, rel=1e-12)
    for name in ("gradient", "heads", "task_loss"):
        ours, theirs = getattr(compiled, name), getattr(numpy, name)
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12 * np.abs(theirs).max())


def test_marginal_pass_gradients_are_the_likelihoods():
    Xs, ys, _, _ = ragged_tasks(T=20, d=8, s=2, sigma=0.3, sizes=(2, 7))
    tasks = metasp.Tasks.from_list(Xs, ys)
    likelihood = _random_heads._MarginalLikelihood(tasks, 1.3, 0.7, 1)
    U = np.random.default_rng(1).standard_normal((8, 2))
    f, dU, dlog_noise, *_ = likelihood.value(U, 0.4)
    step = 1e-6
    E = np.zeros_like(U)
    E[3, 1] = step
    numeric = (likelihood.value(U + E, 0.4, False) - likelihood.value(U - E, 0.4, False)) / 2 / step
    assert dU[3, 1] == pytest.approx(numeric, rel=1e-6)
    noise_up, noise_down = 0.4 * np.exp(step), 0.4 * np.exp(-step)
    numeric = (likelihood.value(U, noise_up, False) - likelihood.value(U, noise_down, False)) / 2 / step
    assert dlog_noise == pytest.approx(numeric, rel=1e-6)


def test_marginal_pass_does_not_depend_on_the_thread_count():
    # Enough work (2 N d s / 16 > 2^20) for the task loop to run in parallel.
    X, y, _ = scarce(T=2000, m=10, d=100, s=5, seed=0)
    tasks = metasp.Tasks.from_array(X, y)
    U = np.random.default_rng(0).standard_normal((100, 5))
    one, two = (kernels.marginal_pass(tasks, U, 0.5, n_jobs=n) for n in (1, 2))
    assert one.deviance == two.deviance
    np.testing.assert_array_equal(one.gradient, two.gradient)


@pytest.mark.parametrize("U, noise, error, match", [
    (np.ones((5, 2)), 1.0, ValueError, "shape"),
    (np.ones((6, 2)), 0.0, ValueError, "noise must be a positive"),
    (np.ones((6, 2)), np.nan, ValueError, "noise must be a positive"),
    (np.full((6, 2), np.nan), 1.0, ValueError, "NaN"),
])
def test_marginal_pass_rejects_bad_arguments(U, noise, error, match):
    tasks = metasp.Tasks.from_array(np.ones((3, 4, 6)), np.ones((3, 4)))
    with pytest.raises(error, match=match):
        kernels.marginal_pass(tasks, U, noise)


def test_marginal_pass_reports_an_undefined_model_as_infinite():
    tasks = metasp.Tasks.from_array(np.ones((3, 4, 6)), np.ones((3, 4)))
    assert kernels.marginal_pass(tasks, np.full((6, 2), 1e300), 1e-300).deviance == np.inf


# ------------------------------------------------------------------ the fit


def test_heads_option():
    X, y, _ = scarce(T=60, m=6, d=20, s=2, seed=0)
    assert metasp.fit(X, y, 2, random_state=0).history["phase"][0] == "random_heads"
    assert metasp.fit(X, y, 2, heads="fixed", random_state=0).history["phase"][0] == "iht"
    # An option of the fixed-heads solver asks for it (the paper's fixed step above all).
    assert metasp.fit(X, y, 2, step=0.1, max_iter=5, tol=0).history["phase"][0] == "iht"
    with pytest.raises(ValueError, match="options of the fixed-heads solver"):
        metasp.fit(X, y, 2, heads="random", step=0.1)
    with pytest.raises(ValueError, match="heads must be"):
        metasp.fit(X, y, 2, heads="shared")


def test_history_of_the_random_heads_fit():
    X, y, B = scarce(T=60, m=6, d=20, s=2, seed=0)
    result = metasp.fit(X, y, 2, reference_B=B, random_state=0)
    history = result.history
    n = result.n_iter
    for key in ("loss", "rel_change", "marginal_nll", "sin_angle", "phase"):
        assert len(history[key]) == n
    assert np.all(np.diff(history["marginal_nll"]) <= 0)  # L-BFGS with an Armijo search
    # Few samples per task: the noise level was chosen by held-out tasks.
    candidates, scores = history["noise_candidates"], history["holdout_score"]
    assert len(candidates) == len(scores) >= 3
    assert np.all(np.diff(candidates) < 0)
    chosen = candidates[np.argmin(scores)]
    assert history["sin_angle"][-1] == pytest.approx(sin_angle(result.B, B), abs=1e-12)
    # The head prior fitted after the fit lies in the same range as the chosen noise level.
    assert 0 < result.noise_variance < 2 * chosen * np.mean(y**2)


def test_rich_tasks_use_maximum_likelihood_without_holding_tasks_out():
    X, y, B = scarce(T=400, m=12, d=10, s=2, seed=0)
    result = metasp.fit(X, y, 2, random_state=0)
    assert _random_heads.scarce_ratio(metasp.Tasks.from_array(X, y), 2) >= _random_heads.SCARCE_RATIO
    assert len(result.history["noise_candidates"]) == 0
    assert result.noise_variance == pytest.approx(1.0, rel=0.15)
    assert sin_angle(result.B, B) < 0.1


def test_least_squares_moments_are_sums_over_the_tasks_with_spare_samples():
    s = 3
    Xs, ys, B, _ = ragged_tasks(T=40, d=12, s=s, sizes=(2, 9))  # some tasks with m_t <= s
    tasks = metasp.Tasks.from_list(Xs, ys)
    basis = np.linalg.qr(B.T + 0.1)[0]
    likelihood = _random_heads._MarginalLikelihood(tasks, 1.0, 1.0, 1)
    moments = likelihood.least_squares_moments(basis)
    second, residual, spare, count = np.zeros((s, s)), 0.0, 0, 0
    for X, y in zip(Xs, ys):
        if len(y) <= s:
            continue
        w, rss = np.linalg.lstsq(X @ basis, y, rcond=None)[:2]
        second += np.outer(w, w)
        residual += rss[0]
        spare += len(y) - s
        count += 1
    assert 0 < count < len(Xs)
    # The solve's jitter (1e-10 of the Gram's trace) moves the heads by about that much.
    np.testing.assert_allclose(moments[: s * s].reshape(s, s), second,
                               atol=1e-8 * np.abs(second).max())
    np.testing.assert_allclose(moments[s * s:], [residual, spare, count], rtol=1e-7)
    # Sums: the moments of two sets of tasks add up (what metasp.dask's shards rely on).
    halves = [_random_heads._MarginalLikelihood(tasks.subset(part), 1.0, 1.0, 1)
              for part in np.array_split(np.arange(len(Xs)), 2)]
    np.testing.assert_allclose(sum(h.least_squares_moments(basis) for h in halves), moments,
                               rtol=1e-12)


def test_moment_start_puts_the_heads_and_the_noise_near_the_truth():
    d, s, sigma = 10, 2, 0.3
    X, y, B = scarce(T=2000, m=12, d=d, s=s, seed=0, sigma=sigma)
    tasks = metasp.Tasks.from_array(X, y)
    scales = (2.0, 4.0)  # standardised units: U acts on X / 2 and y / 4
    basis = B.T  # the true subspace
    likelihood = _random_heads._MarginalLikelihood(tasks, *scales, 1)
    U, noise = _random_heads.moment_start(likelihood.least_squares_moments(basis), basis, scales)
    # Heads N(0, I): U U^T is B^T B in the data's units, plus the noise the least-squares
    # heads carry (about sigma^2 / (m - s) here); noise sigma^2, both in standardised units.
    to_data = scales[1] / scales[0]
    np.testing.assert_allclose((U * to_data) @ (U * to_data).T, basis @ basis.T, atol=0.08)
    assert noise * scales[1] ** 2 == pytest.approx(sigma**2, rel=0.05)
    # No task with more samples than s: no start from moments.
    few = metasp.Tasks.from_array(X[:, :s], y[:, :s])
    assert _random_heads.moment_start(
        _random_heads._MarginalLikelihood(few, 1.0, 1.0, 1).least_squares_moments(basis),
        basis, (1.0, 1.0)) is None


def test_heads_of_the_fit_are_the_posterior_means_at_its_end():
    # The fit reuses the heads of L-BFGS's last evaluation: they must be those at its result.
    X, y, _ = scarce(T=400, m=12, d=10, s=2, seed=0, sigma=0.3)
    tasks = metasp.Tasks.from_array(X, y)
    start = _random_heads.spectral_start(tasks, 2, seed=0, n_threads=1)
    fitted = _random_heads.fit_random_heads(tasks, 2, start, max_iter=1000, tol=1e-10, seed=0,
                                            n_threads=1)
    assert fitted.status == "converged" and fitted.n_iter > 0
    scales = _random_heads.standardising_scales(tasks)
    likelihood = _random_heads._MarginalLikelihood(tasks, *scales, 1)
    to_data = scales[1] / scales[0]
    np.testing.assert_allclose(
        fitted.heads, likelihood.posterior_heads(fitted.U / to_data, fitted.noise_share),
        rtol=1e-12, atol=1e-14)


def test_fit_does_not_depend_on_the_thread_count():
    # Large enough that the final fit's passes over all tasks run in parallel.
    X, y, _ = scarce(T=3000, m=6, d=100, s=5, seed=1)
    one, two = (metasp.fit(X, y, 5, n_jobs=n, random_state=0) for n in (1, 2))
    assert one.n_iter == two.n_iter
    np.testing.assert_array_equal(one.Theta, two.Theta)


def test_canonical_form():
    X, y, _ = scarce(T=80, m=6, d=20, s=3, seed=2)
    result = metasp.fit(X, y, 3, random_state=0)
    np.testing.assert_allclose(result.B @ result.B.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(result.W @ result.B, result.Theta, atol=1e-12)
    gram = result.W.T @ result.W
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-10 * gram.max())
    np.testing.assert_allclose(np.sqrt(np.diag(gram)), result.singular_values, rtol=1e-10)
    assert np.all(np.diff(result.singular_values) <= 0)


def test_scale_of_the_data_does_not_matter():
    X, y, _ = scarce(T=80, m=6, d=20, s=2, seed=3)
    plain = metasp.fit(X, y, 2, random_state=0)
    scaled = metasp.fit(X * 1e-3, y * 1e4, 2, random_state=0)
    assert sin_angle(plain.B, scaled.B) < 1e-6
    assert scaled.noise_variance == pytest.approx(plain.noise_variance * 1e8, rel=1e-5)


# ------------------------------------------------------------------ scarce data


@pytest.mark.parametrize("seed", range(3))
def test_heads_stay_bounded_where_least_squares_heads_blow_up(seed):
    # m = 4 for s = 2 in d = 20: the largest least-squares head of the fixed-heads fit is 30-60
    # on these seeds (true heads are N(0, 1)).
    X, y, B = scarce(T=100, m=4, d=20, s=2, seed=seed)
    result = metasp.fit(X, y, 2, random_state=0)
    assert result.status == "converged"
    assert np.abs(result.W).max() < 5  # true heads are N(0, 1)
    assert np.all(np.isfinite(result.Theta))


def test_no_worse_than_the_trace_norm_tuned_in_hindsight():
    angles, trace_norm = [], []
    for seed in range(3):
        X, y, B = scarce(T=100, m=4, d=20, s=2, seed=seed)
        tasks = metasp.Tasks.from_array(X, y)
        angles.append(sin_angle(metasp.fit(tasks, None, 2, random_state=0).B, B))
        trace_norm.append(best_trace_norm(tasks, 2, B))
    assert np.median(angles) <= np.median(trace_norm)


@pytest.mark.parametrize("T, m", [(30, 10), (150, 5), (150, 3)])
def test_scarce_fits_converge(T, m):
    # T (m - s) from below to about the d s unknowns of the subspace, m = s included.
    X, y, _ = scarce(T=T, m=m, d=30, s=3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.DiagnosticWarning)  # below the information limit
        result = metasp.fit(X, y, 3, random_state=0)
    assert result.status == "converged"
    assert result.n_iter < 300


def test_noiseless_scarce_data_end_in_exact_recovery():
    # Held-out tasks choose ever smaller noise levels; below a negligible one the least-squares
    # polish takes over and recovers the subspace exactly.
    X, y, B, _ = metasp.datasets.make_hps(T=200, m=5, d=50, s=3, random_state=0)
    result = metasp.fit(X, y, 3, random_state=0)
    assert result.history["noise_candidates"][-1] < _random_heads.NEGLIGIBLE_NOISE
    assert result.history["phase"][-1] == "polish"
    assert sin_angle(result.B, B) < 1e-8
