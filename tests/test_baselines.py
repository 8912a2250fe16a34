"""metasp.baselines: known answers, recovery on easy data, uniform results, clear errors."""

import numpy as np
import pytest
from conftest import ragged_tasks

import metasp
from metasp import ConvergenceWarning, baselines
from metasp.baselines._anil import _anil_meta_gradient, _split_tasks
from metasp.baselines._common import without_targets
from metasp.metrics import sin_angle

S = 2


@pytest.fixture(scope="module")
def easy():
    """Many samples per task and little noise: every method should find the subspace."""
    return metasp.datasets.make_hps(T=100, m=60, d=10, s=S, sigma=0.01, random_state=0)


# Largest sin angle each method reached on the easy data, measured on seeds 0-2 (with a margin
# of about 2x): the estimators that fit the data (least squares in some form) all reach the
# noise floor, ~5e-4; MoM converges slowly in the number of samples (0.12-0.16); ANIL stops at
# max_iter with 6e-3 to 1.1e-2.
FITTING = {
    "single_task": lambda X, y: baselines.single_task(X, y, S, random_state=0),
    "altmin": lambda X, y: baselines.altmin(X, y, S, random_state=0),
    "altmin_random": lambda X, y: baselines.altmin(X, y, S, init="random", random_state=0),
    "altmin_gd": lambda X, y: baselines.altmin_gd(X, y, S, random_state=0),
    "burer_monteiro": lambda X, y: baselines.burer_monteiro(X, y, S, random_state=0),
    "burer_monteiro_gd": lambda X, y: baselines.burer_monteiro(X, y, S, solver="gd",
                                                               random_state=0),
    "burer_monteiro_random": lambda X, y: baselines.burer_monteiro(X, y, S, init="random",
                                                                   random_state=0),
    "nuclear_norm": lambda X, y: baselines.nuclear_norm(X, y, S, random_state=0),
    "nuclear_norm_sigma": lambda X, y: baselines.nuclear_norm(X, y, S, sigma=0.01,
                                                              random_state=0),
    "nuclear_norm_search": lambda X, y: baselines.nuclear_norm(X, y, S, lam="search",
                                                               random_state=0),
}


@pytest.mark.parametrize("name", FITTING)
def test_fitting_methods_recover_the_subspace(easy, name):
    X, y, B, W = easy
    result = FITTING[name](X, y)
    assert result.status == "converged"
    assert sin_angle(result.B, B) < 1e-3
    # Same estimator as Meta-SP up to the noise floor.
    assert sin_angle(result.B, metasp.fit(X, y, S, random_state=0).B) < 2e-4
    assert metasp.metrics.frobenius_error(result.Theta, W @ B) < 5e-3


def test_mom_recovers_roughly(easy):
    X, y, B, _ = easy
    assert sin_angle(baselines.mom(X, y, S).B, B) < 0.3


@pytest.mark.parametrize("order", [1, 2])
def test_anil_recovers_but_converges_slowly(easy, order):
    X, y, B, _ = easy
    with pytest.warns(ConvergenceWarning, match="anil stopped at max_iter"):
        result = baselines.anil(X, y, S, order=order, random_state=0)
    assert result.status == "max_iter" and result.n_iter == 1000
    assert sin_angle(result.B, B) < 0.03
    loss = result.history["query_loss"]
    assert loss[-1] < 0.01 * loss[0]


def test_mom_equals_direct_numpy():
    X, y, _, _ = metasp.datasets.make_hps(T=30, m=8, d=6, s=2, sigma=0.1, random_state=3)
    result = baselines.mom(X, y, 2)
    x, targets = X.reshape(-1, 6), y.reshape(-1)
    moment = sum(t**2 * np.outer(row, row) for row, t in zip(x, targets)) / x.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(moment)
    assert sin_angle(result.B, eigenvectors[:, -2:].T) < 1e-12
    np.testing.assert_allclose(result.history["eigenvalues"], eigenvalues[::-1][:3], rtol=1e-12)
    for t in range(30):
        head = np.linalg.lstsq(X[t] @ result.B.T, y[t], rcond=None)[0]
        np.testing.assert_allclose(result.W[t], head, rtol=1e-9, atol=1e-12)


def test_single_task_ridge_matches_closed_form():
    X, y, _, _ = metasp.datasets.make_hps(T=20, m=5, d=8, s=2, sigma=0.1, random_state=1)
    ridge = 0.3
    result = baselines.single_task(X, y, 2, ridge=ridge, random_state=0)
    stacked = np.array([np.linalg.solve(X[t].T @ X[t] / 5 + ridge * np.eye(8), X[t].T @ y[t] / 5)
                        for t in range(20)])
    U, S_, Vt = np.linalg.svd(stacked)
    np.testing.assert_allclose(result.Theta, (U[:, :2] * S_[:2]) @ Vt[:2], atol=1e-10)


def test_oracle_returns_the_truth(easy):
    X, y, B, W = easy
    result = baselines.oracle(X, y, S, B_true=3.0 * B)  # any basis of the subspace
    assert sin_angle(result.B, B) < 1e-12
    np.testing.assert_allclose(result.B @ result.B.T, np.eye(S), atol=1e-12)
    assert metasp.metrics.frobenius_error(result.Theta, W @ B) < 5e-3


def test_anil_meta_gradient_matches_finite_differences():
    X, y, _, _ = metasp.datasets.make_hps(T=6, m=8, d=5, s=2, sigma=0.1, random_state=2)
    tasks = metasp.Tasks.from_array(X, y)
    support, query = _split_tasks(tasks, 0.5)
    without_y = without_targets(support)
    B = np.random.default_rng(0).standard_normal((2, 5))
    for order, steps in ((2, 1), (2, 3)):
        _, grad = _anil_meta_gradient(support, without_y, query, B, 0.2, steps, order, None)
        numeric = np.zeros_like(B)
        for index in np.ndindex(B.shape):
            shift = np.zeros_like(B)
            shift[index] = 1e-6
            up = _anil_meta_gradient(support, without_y, query, B + shift, 0.2, steps, order,
                                     None)[0]
            down = _anil_meta_gradient(support, without_y, query, B - shift, 0.2, steps, order,
                                       None)[0]
            numeric[index] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    # First order drops the terms through the heads: it differs from the exact gradient.
    first = _anil_meta_gradient(support, without_y, query, B, 0.2, 3, 1, None)[1]
    assert np.linalg.norm(first - grad) > 1e-3 * np.linalg.norm(grad)


def test_nuclear_norm_default_lambda_and_search(easy):
    X, y, _, _ = easy
    tasks = metasp.Tasks.from_array(X, y)
    expected = 0.01 * np.sqrt(100 + 10**2 / 60) / np.sqrt(100 * 60)
    assert baselines.default_lambda(tasks, 0.01) == pytest.approx(expected)
    result = baselines.nuclear_norm(tasks, None, S, lam="search", sigma=0.01, random_state=0)
    grid = result.history["lambda_grid"]
    np.testing.assert_allclose(grid, expected * np.array([0.25, 0.5, 1, 2, 4]))
    assert result.history["lambda"][0] in grid
    assert len(result.history["validation_error"]) == 5


def test_noise_level_estimate(easy):
    X, y, _, _ = easy
    assert baselines.noise_level(X, y, S, random_state=0) == pytest.approx(0.01, rel=0.1)


def test_nuclear_norm_searches_its_weight_where_the_noise_cannot_be_estimated():
    # m = s = 3: no residual degrees of freedom, so noise_level cannot help.
    X, y, B, _ = metasp.datasets.make_hps(T=300, m=3, d=10, s=3, sigma=0.3, random_state=0)
    result = baselines.nuclear_norm(X, y, 3, random_state=0)
    grid = result.history["lambda_grid"]
    base = baselines.default_lambda(metasp.Tasks.from_array(X, y), np.sqrt(np.mean(y**2)))
    np.testing.assert_allclose(grid, base * 2.0 ** -np.arange(7))
    assert result.history["lambda"][0] == grid[np.argmin(result.history["validation_error"])]
    assert sin_angle(result.B, B) < 0.5


def test_nuclear_norm_huge_lambda_is_an_error(easy):
    X, y, _, _ = easy
    with pytest.raises(ValueError, match="so large that the solution is 0"):
        baselines.nuclear_norm(X, y, S, lam=1e6)


ALL = {
    "mom": lambda Xs, ys, s: baselines.mom(Xs, ys, s),
    "anil": lambda Xs, ys, s: baselines.anil(Xs, ys, s, max_iter=20, tol=0, random_state=0),
    "burer_monteiro": lambda Xs, ys, s: baselines.burer_monteiro(Xs, ys, s, random_state=0),
    "altmin": lambda Xs, ys, s: baselines.altmin(Xs, ys, s, random_state=0),
    "altmin_gd": lambda Xs, ys, s: baselines.altmin_gd(Xs, ys, s, random_state=0),
    "nuclear_norm": lambda Xs, ys, s: baselines.nuclear_norm(Xs, ys, s, sigma=0.05,
                                                             random_state=0),
    "single_task": lambda Xs, ys, s: baselines.single_task(Xs, ys, s, ridge=0.1,
                                                           random_state=0),
}


@pytest.mark.parametrize("name", ALL)
def test_ragged_tasks_and_uniform_results(name):
    Xs, ys, B, _ = ragged_tasks(T=60, d=20, s=3, sigma=0.05)
    result = ALL[name](Xs, ys, 3)
    assert isinstance(result, metasp.MetaSPResult)
    assert result.B.shape == (3, 20) and result.W.shape == (60, 3)
    assert result.Theta.shape == (60, 20) and result.singular_values.shape == (3,)
    np.testing.assert_allclose(result.B @ result.B.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(result.Theta, result.W @ result.B, atol=1e-10)
    assert np.all(np.diff(result.singular_values) <= 1e-12)
    assert result.status in ("converged", "max_iter")
    # The result adapts to and predicts for a new task like a Meta-SP result.
    X_new = np.random.default_rng(0).standard_normal((6, 20))
    head = np.linalg.lstsq(X_new @ result.B.T, X_new @ B[0], rcond=None)[0]
    assert result.predict(X_new, head).shape == (6,)
    # The same tasks as a metasp.Tasks give the same answer.
    again = ALL[name](metasp.Tasks.from_list(Xs, ys), None, 3)
    np.testing.assert_allclose(again.Theta, result.Theta, atol=1e-8)


def test_burer_monteiro_without_scipy_says_what_to_install(easy, monkeypatch):
    import sys

    X, y, _, _ = easy
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match=r'metasp\[sklearn\]'):
        baselines.burer_monteiro(X, y, S, solver="lbfgs")
    # "auto" falls back to gradient descent.
    result = baselines.burer_monteiro(X, y, S, random_state=0)
    assert len(result.history["objective"]) == result.n_iter + 1


@pytest.mark.parametrize("call, error, match", [
    (lambda X, y: baselines.mom(X, y, 11), ValueError, "1 <= s <= min"),
    (lambda X, y: baselines.mom(X, y, None), TypeError, "rank s is missing"),
    (lambda X, y: baselines.altmin(X, y, 2, init="mom"), ValueError, "init must be one of"),
    (lambda X, y: baselines.altmin(X, y, 2, max_iter=0), ValueError, "max_iter"),
    (lambda X, y: baselines.altmin(X, y, 2, cg_steps=1.5), TypeError, "cg_steps"),
    (lambda X, y: baselines.anil(X, y, 2, order=3), ValueError, "order must be 1"),
    (lambda X, y: baselines.anil(X, y, 2, inner_lr=-1), ValueError, "inner_lr must be positive"),
    (lambda X, y: baselines.anil(X, y, 2, support_fraction=1.0), ValueError, "below 1"),
    (lambda X, y: baselines.anil(X[:, :1], y[:, :1], 2), ValueError, "at least 2 samples"),
    (lambda X, y: baselines.burer_monteiro(X, y, 2, solver="newton"), ValueError, "solver"),
    (lambda X, y: baselines.nuclear_norm(X, y, 2, lam=-1.0), ValueError, "lam must be"),
    (lambda X, y: baselines.nuclear_norm(X, y, 2, lam="cv"), ValueError, "lam must be one of"),
    (lambda X, y: baselines.nuclear_norm(X, y, 2, lam="search", lam_grid=()), ValueError,
     "lam_grid"),
    (lambda X, y: baselines.noise_level(X[:2, :3], y[:2, :3], 2), ValueError,
     "too few samples to estimate the noise level"),
    (lambda X, y: baselines.single_task(X, y, 2, ridge=-0.1), ValueError, "ridge"),
    (lambda X, y: baselines.oracle(X, y, 2), TypeError, "needs the true subspace"),
    (lambda X, y: baselines.oracle(X, y, 2, B_true=np.eye(3, 10)), ValueError, "2 rows"),
    (lambda X, y: baselines.oracle(X, y, 2, B_true=np.eye(2, 9)), ValueError, "d = 10"),
    (lambda X, y: baselines.mom(X, None, 2), TypeError, "ys is missing"),
    (lambda X, y: baselines.mom(X[0], y[0], 2), ValueError, "3-D"),
])
def test_bad_input_is_explained(easy, call, error, match):
    X, y, _, _ = easy
    with pytest.raises(error, match=match):
        call(X, y)
