"""CGIHT, the least-squares polish, starts, stopping rules and diagnostics (issue 6)."""

import warnings

import numpy as np
import pytest
from conftest import DTYPES, core_polish, ragged_tasks, with_dtype

import metasp
from metasp import _core, _polish
from metasp.metrics import sin_angle


def projector(B):
    return B.T @ B


def small_noisy(seed=3, **kwargs):
    shape = dict(T=80, m=12, d=25, s=3, sigma=0.1)
    shape.update(kwargs)
    return metasp.datasets.make_hps(random_state=seed, **shape)


# ---------------------------------------------------------------- C++ against the NumPy reference


@pytest.mark.parametrize("layout", ["equal", "ragged"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cgiht_matches_reference(layout, dtype, strict_svd):
    if layout == "equal":
        X, y, B, _ = small_noisy()
    else:
        X, y, B, _ = ragged_tasks()
    X = with_dtype(X, dtype)
    options = dict(accel="cg", polish=None, tol=0, max_iter=30, reference_B=B)
    result = metasp.fit(X, y, 3, random_state=0, **options)
    expected = metasp.reference.fit(with_dtype(X, "float64"), y, 3, **options)
    assert result.n_iter == expected.n_iter == 30
    scale = np.abs(expected.Theta).max()
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(result.history["loss"], expected.history["loss"], rtol=1e-9)
    # Conjugate directions are really used, and restarts happen.
    beta = result.history["beta"]
    np.testing.assert_allclose(beta[:15], expected.history["beta"][:15], rtol=1e-6, atol=1e-9)
    assert np.any(beta > 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("newton_solve", ["auto", "dense", "cg"])
def test_polish_matches_reference(dtype, newton_solve):
    """The Newton step by Cholesky of the dense system and by matrix-free conjugate gradients."""
    X, y, B, _ = small_noisy(sigma=0.3)
    tasks = metasp.Tasks.from_array(X, y, dtype=dtype)
    promoted = metasp.Tasks.from_array(tasks.X.reshape(X.shape), y, dtype=np.float64)
    start = np.linalg.qr(B.T + 0.3 * np.random.default_rng(0).standard_normal(B.T.shape))[0]
    out = core_polish(tasks, start, 4, 0.0, 1,
                       newton_solve=newton_solve)
    expected = metasp.reference.polish_path(promoted, start, max_iter=4, tol=0,
                                            newton_solve=newton_solve)
    # The reference itself computes in float64 when given float32 X.
    direct = metasp.reference.polish_path(tasks, start, max_iter=4, tol=0,
                                          newton_solve=newton_solve)
    np.testing.assert_allclose(direct["Theta"], expected["Theta"], rtol=0,
                               atol=1e-12 * np.abs(expected["Theta"]).max())
    assert out["n_iter"] == expected["n_iter"] == 4
    assert out["n_newton"] == expected["n_newton"] > 0
    np.testing.assert_allclose(out["Theta"], expected["Theta"], rtol=0,
                               atol=1e-11 * np.abs(expected["Theta"]).max())
    np.testing.assert_allclose(out["loss"], expected["loss"], rtol=1e-12)


def test_converging_polish_matches_reference_with_conjugate_gradients():
    """To convergence (tol > 0: the solve also stops once its error is far below tol)."""
    X, y, B, _ = small_noisy(sigma=0.3)
    tasks = metasp.Tasks.from_array(X, y)
    start = np.linalg.qr(B.T + 0.1 * np.random.default_rng(2).standard_normal(B.T.shape))[0]
    out = core_polish(tasks, start, 100, 1e-10, 1,
                       newton_solve="cg")
    expected = metasp.reference.polish_path(tasks, start, max_iter=100, tol=1e-10,
                                            newton_solve="cg")
    assert out["status"] == expected["status"] == "converged"
    assert out["n_iter"] == expected["n_iter"] and out["n_newton"] == expected["n_newton"]
    np.testing.assert_allclose(out["Theta"], expected["Theta"], rtol=0,
                               atol=1e-11 * np.abs(expected["Theta"]).max())


def test_newton_solves_reach_the_same_minimum():
    """Conjugate gradients stop at a relative residual of 1e-6 (an inexact Newton step): the
    polish still converges, in as many sweeps, to the minimum the Cholesky solve reaches."""
    X, y, B, _ = small_noisy(sigma=0.3, T=300)
    tasks = metasp.Tasks.from_array(X, y)
    start = np.linalg.qr(B.T + 0.1 * np.random.default_rng(0).standard_normal(B.T.shape))[0]
    runs = {how: core_polish(tasks, start, 100,
                              1e-10, 1, newton_solve=how) for how in ("dense", "cg")}
    assert runs["dense"]["status"] == runs["cg"]["status"] == "converged"
    assert runs["cg"]["n_iter"] <= runs["dense"]["n_iter"] + 1
    np.testing.assert_allclose(runs["cg"]["Theta"], runs["dense"]["Theta"], rtol=0,
                               atol=1e-9 * np.abs(runs["dense"]["Theta"]).max())
    assert _polish.newton_cg_budget(tasks, 3, "dense") == 0
    assert _polish.newton_cg_budget(tasks, 3, "cg") == 25 * 3


def test_newton_solve_must_be_known():
    X, y, B, _ = small_noisy()
    tasks = metasp.Tasks.from_array(X, y)
    with pytest.raises(ValueError, match="newton_solve must be"):
        core_polish(tasks, B.T, 2, 0.0, 1,
                     newton_solve="lu")


@pytest.mark.parametrize("max_dense", [_core.constants["max_dense_normal"], 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_alternating_least_squares_matches_reference(max_dense, dtype):
    """Pure ALS (no Newton step), with the dense Cholesky and the conjugate-gradient solve."""
    X, y, B, _ = small_noisy(sigma=0.3)
    tasks = metasp.Tasks.from_array(X, y, dtype=dtype)
    promoted = metasp.Tasks.from_array(tasks.X.reshape(X.shape), y, dtype=np.float64)
    start = np.linalg.qr(B.T + 0.3 * np.random.default_rng(1).standard_normal(B.T.shape))[0]
    out = core_polish(tasks, start, 5, 0.0, 1,
                       max_dense=max_dense, newton=False)
    expected = metasp.reference.polish_path(promoted, start, max_iter=5, tol=0, newton=False)
    assert out["n_iter"] == 5 and out["n_newton"] == expected["n_newton"] == 0
    np.testing.assert_allclose(out["Theta"], expected["Theta"], rtol=0,
                               atol=1e-9 * np.abs(expected["Theta"]).max())


def test_fixed_heads_fit_matches_reference_to_convergence():
    Xs, ys, B, _ = ragged_tasks(sigma=0.05, sizes=(6, 30))
    result = metasp.fit(Xs, ys, 3, heads="fixed", random_state=0)
    expected = metasp.reference.fit(Xs, ys, 3)
    assert result.status == expected.status == "converged"
    assert set(result.history["phase"]) == {"iht", "polish"}
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0,
                               atol=1e-8 * np.abs(expected.Theta).max())


def test_polish_does_not_depend_on_the_thread_count():
    # Large enough that the normal-equation accumulation really runs in parallel.
    X, y, _, _ = metasp.datasets.make_hps(T=600, m=10, d=20, s=3, sigma=0.2, random_state=4)
    one = metasp.fit(X, y, 3, n_jobs=1, random_state=5)
    two = metasp.fit(X, y, 3, n_jobs=2, random_state=5)
    assert one.n_iter == two.n_iter
    np.testing.assert_allclose(two.Theta, one.Theta, rtol=0, atol=1e-12 * np.abs(one.Theta).max())


def test_matrix_free_newton_does_not_depend_on_the_thread_count():
    # Large enough that the Newton operator's task loops really run in parallel.
    X, y, B, _ = metasp.datasets.make_hps(T=2000, m=20, d=60, s=3, sigma=0.2, random_state=4)
    tasks = metasp.Tasks.from_array(X, y)
    assert _polish.newton_cg_budget(tasks, 3) > 0  # the default takes this path
    start = np.linalg.qr(B.T + 0.1 * np.random.default_rng(0).standard_normal(B.T.shape))[0]
    one, two = (core_polish(tasks, start, 3, 0.0,
                             n_threads) for n_threads in (1, 2))
    assert one["n_newton"] == two["n_newton"] >= 2 and one["n_iter"] == two["n_iter"]
    np.testing.assert_array_equal(two["Theta"], one["Theta"])


# ---------------------------------------------------------------- accuracy and speed of the default


@pytest.mark.parametrize("seed", [0, 1])
def test_default_recovers_exactly_near_the_information_limit(seed):
    # m = 5 per task; m_IT = s(T + d - s)/T = 3.7. Plain NIHT reaches only ~1e-3 in 1000 steps.
    X, y, B, _ = metasp.datasets.make_hps(T=200, m=5, d=50, s=3, random_state=seed)
    result = metasp.fit(X, y, 3, random_state=0)
    assert result.status == "converged"
    assert sin_angle(result.B, B) < 1e-8
    assert result.n_iter < 300


def test_fixed_heads_reach_the_oracle_least_squares_fit():
    X, y, B, _ = metasp.datasets.make_hps(T=50, m=10, d=50, s=3, sigma=0.1, random_state=2)
    result = metasp.fit(X, y, 3, heads="fixed", random_state=0)
    oracle = metasp.polish(X, y, B, max_iter=200)
    assert result.status == oracle.status == "converged"
    assert result.history["loss"][-1] <= oracle.history["loss"][-1] * (1 + 1e-9)
    assert sin_angle(result.B, oracle.B) < 1e-6


def test_conjugate_directions_need_fewer_iterations_than_niht(noiseless):
    X, y, _, _ = noiseless
    cg = metasp.fit(X, y, 3, polish=None, random_state=0)
    niht = metasp.fit(X, y, 3, accel=None, polish=None, random_state=0)
    assert cg.status == niht.status == "converged"
    assert cg.n_iter < niht.n_iter / 2


def test_polish_finishes_what_hard_thresholding_starts(noiseless):
    X, y, B, _ = noiseless
    result = metasp.fit(X, y, 3, heads="fixed", random_state=0, reference_B=B)
    phase = result.history["phase"]
    assert phase[0] == "iht" and phase[-1] == "polish"
    assert np.all(np.isnan(result.history["step"][phase == "polish"]))
    assert result.history["sin_angle"][-1] < 1e-12


# ---------------------------------------------------------------- starts and stopping


@pytest.mark.parametrize("init", ["spectral", "zero", "array"])
def test_initialisations_recover_the_subspace(init, noiseless):
    X, y, B, _ = noiseless
    start = B + 0.2 * np.random.default_rng(0).standard_normal(B.shape) if init == "array" else init
    result = metasp.fit(X, y, 3, init=start, random_state=0)
    assert result.status == "converged"
    assert sin_angle(result.B, B) < 1e-10


@pytest.mark.parametrize("init", ["spectral", "array"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_initialisations_match_reference(init, dtype, strict_svd):
    X, y, B, _ = small_noisy()
    X = with_dtype(X, dtype)
    start = B + 0.5 * np.random.default_rng(0).standard_normal(B.shape) if init == "array" else init
    options = dict(init=start, accel=None, polish=None, tol=0, max_iter=10)
    result = metasp.fit(X, y, 3, random_state=0, **options)
    expected = metasp.reference.fit(with_dtype(X, "float64"), y, 3, **options)
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0,
                               atol=1e-10 * np.abs(expected.Theta).max())


def test_extra_starts_keep_the_lowest_loss():
    X, y, _, _ = metasp.datasets.make_hps(T=40, m=10, d=20, s=2, sigma=0.5, random_state=1)
    result = metasp.fit(X, y, 2, n_starts=3, random_state=0)
    start_loss = result.history["start_loss"]
    assert start_loss.shape == (3,)
    assert result.history["loss"][-1] == pytest.approx(np.nanmin(start_loss), rel=1e-14)
    single = metasp.fit(X, y, 2, heads="fixed", random_state=0)
    assert single.history["start_loss"][0] == pytest.approx(start_loss[0], rel=1e-12)


def test_sin_tol_stops_early(noiseless):
    X, y, B, _ = noiseless
    result = metasp.fit(X, y, 3, reference_B=B, sin_tol=1e-3, random_state=0)
    full = metasp.fit(X, y, 3, reference_B=B, random_state=0)
    assert result.status == "converged"
    assert result.history["sin_angle"][-1] <= 1e-3 < result.history["sin_angle"][-2]
    assert result.n_iter < full.n_iter


def test_fixed_step_keeps_the_paper_algorithm_unless_asked(noiseless):
    X, y, _, _ = noiseless
    paper = metasp.fit(X, y, 3, step=0.25, random_state=0)
    assert set(paper.history["phase"]) == {"iht"} and "beta" not in paper.history
    polished = metasp.fit(X, y, 3, step=0.25, polish="als", random_state=0)
    assert polished.history["phase"][-1] == "polish"
    assert polished.n_iter < paper.n_iter


# ---------------------------------------------------------------- diagnostics


def test_diagnostics_fire_on_a_too_large_fixed_step(noiseless):
    X, y, _, _ = noiseless  # m = 15 < d = 50: gamma = 1 overshoots
    with pytest.warns(metasp.DivergenceWarning, match="step='auto'"):
        result = metasp.fit(X, y, 3, step=1.0)
    codes = [finding.code for finding in result.diagnostics]
    assert codes == ["step_too_large"]
    assert "smaller step" in result.diagnostics[0].message


def test_a_converged_fixed_step_fit_is_not_called_oscillating():
    """Its loss moves by rounding at the end, up as often as down."""
    X, y, _, _ = metasp.datasets.make_hps(T=120, m=15, d=10, s=2, sigma=0.3, random_state=0)
    result = metasp.fit(X, y, 2, step=0.5)
    assert result.status == "converged"
    assert np.any(np.diff(result.history["loss"][-20:]) > 0)  # rounding
    assert result.diagnostics == []


def test_diagnostics_fire_on_a_too_small_rank():
    X, y, _, _ = metasp.datasets.make_hps(T=200, m=15, d=50, s=3, sigma=0.1, random_state=0)
    with pytest.warns(metasp.DiagnosticWarning, match="Increase s"):
        result = metasp.fit(X, y, 2, random_state=0)
    assert [finding.code for finding in result.diagnostics] == ["rank_too_small"]


@pytest.mark.parametrize("heads, says", [("fixed", "cannot be identified"),
                                         ("random", "expect a large error")])
def test_diagnostics_name_the_information_limit(heads, says):
    X, y, _, _ = metasp.datasets.make_hps(T=50, m=3, d=50, s=3, sigma=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.ConvergenceWarning)
        with pytest.warns(metasp.DiagnosticWarning, match="below the information limit") as caught:
            result = metasp.fit(X, y, 3, heads=heads, max_iter=50, random_state=0)
    assert any(says in str(w.message) for w in caught)
    assert "too_few_samples" in [finding.code for finding in result.diagnostics]


@pytest.mark.parametrize("task0_variance, flagged", [(1e4, True), (1.0, False)])
def test_diagnostics_flag_a_direction_most_tasks_do_not_see(task0_variance, flagged):
    from types import SimpleNamespace

    from metasp._diagnostics import WEAK_DIRECTION, _predictive_variance_ratio, diagnose
    from metasp._prior import task_sufficient_statistics

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 10, 4))
    X[1:, :, 3] = 0.0  # feature 3 varies in task 0 only
    tasks = metasp.Tasks.from_array(X, rng.standard_normal((40, 10)))
    B = np.eye(4)[2:]
    result = metasp.MetaSPResult(B=B, W=np.zeros((40, 2)), Theta=np.zeros((40, 4)),
                                 singular_values=np.zeros(2), n_iter=1, status="converged",
                                 head_mean=np.zeros(2), head_cov=np.diag([1.0, task0_variance]),
                                 noise_variance=1.0)
    gram = task_sufficient_statistics(tasks, B)[0]
    # Task 0's prior predictive variance is about 1 + task0_variance, the others' about 1.
    ratio = _predictive_variance_ratio(gram, result.head_cov, tasks.task_sizes)
    assert ratio == pytest.approx(1 + task0_variance, rel=0.6)
    args = SimpleNamespace(tasks=tasks, s=2, adaptive=True, step=None)
    assert diagnose(result, args, gradient=None) == []  # no statistics, no check
    codes = [finding.code for finding in diagnose(result, args, gradient=None, gram=gram)]
    assert (codes == ["weak_direction"]) == flagged == (ratio > WEAK_DIRECTION)


@pytest.mark.parametrize("T, d", [(300, 40), (30, 80)])
@pytest.mark.parametrize("spike", [0.0, 3.0])
def test_rank_spike_from_the_gram_matrix_equals_the_truncated_svd(monkeypatch, T, d, spike):
    from metasp import _diagnostics

    # Noise-like residual correlations (a right rank), or with a planted shared direction.
    rng = np.random.default_rng(T + d)
    sizes = rng.integers(5, 20, size=T)
    G = (rng.standard_normal((T, d)) + spike * np.outer(rng.standard_normal(T),
                                                         rng.standard_normal(d)) / np.sqrt(d))
    G /= np.sqrt(sizes)[:, None]
    from_gram = _diagnostics.rank_spike(G, sizes, 3)
    monkeypatch.setattr(_diagnostics, "SMALL_GRAM", 0)
    assert _diagnostics.rank_spike(G, sizes, 3, n_jobs=1) == pytest.approx(from_gram, rel=1e-10)
    assert (from_gram > _diagnostics.RANK_SPIKE) == (spike > 0)


@pytest.mark.parametrize("shape", [dict(T=200, m=15, d=50, s=3, sigma=0.0),
                                   dict(T=100, m=20, d=30, s=4, sigma=1.0),
                                   dict(T=50, m=10, d=50, s=3, sigma=0.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_diagnostics_stay_quiet_on_a_clean_fit(shape, seed):
    X, y, _, _ = metasp.datasets.make_hps(random_state=seed, **shape)
    result = metasp.fit(X, y, shape["s"], random_state=0)  # any warning fails the test
    assert result.status == "converged"
    assert result.diagnostics == []


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fit", [metasp.fit, metasp.reference.fit])
@pytest.mark.parametrize("options, error, match", [
    (dict(accel="fast"), ValueError, r"accel must be 'cg'"),
    (dict(polish="newton"), ValueError, r"polish must be 'auto'"),
    (dict(n_starts=0), ValueError, r"n_starts must be between 1 and 1000"),
    (dict(n_starts=1.5), TypeError, r"n_starts must be an integer"),
    (dict(sin_tol=1e-3), ValueError, r"sin_tol needs reference_B"),
    (dict(sin_tol=2.0), ValueError, r"sin_tol must be in \(0, 1\)"),
    (dict(init=np.ones((2, 10))), ValueError, r"init must have shape|init does not have full"),
    (dict(init=np.eye(3, 12)), ValueError, r"init must have d = 10 columns"),
])
def test_new_options_reject_bad_values(fit, options, error, match):
    X, y, _, _ = metasp.datasets.make_hps(T=10, m=5, d=10, s=2, random_state=0)
    with pytest.raises(error, match=match):
        fit(X, y, 2, **options)


def test_polish_rejects_a_missing_start():
    X, y, _, _ = metasp.datasets.make_hps(T=10, m=5, d=10, s=2, random_state=0)
    with pytest.raises(TypeError, match="starting subspace B is missing"):
        metasp.polish(X, y)


def test_stall_rule():
    """The "stalled" rule of the hard-thresholding phase (the C++ solver has the same)."""
    from metasp._hard_thresholding import _stalled

    steady = list(0.9 ** np.arange(200.0))
    assert not _stalled(steady, steady, patience=100)
    flat_loss = [1.0] * 200
    cycling_change = [0.1, 0.2] * 100
    assert _stalled(flat_loss, cycling_change, patience=100)
    # A noisy fit near convergence: the loss is flat to rounding, but the change still falls.
    assert not _stalled(flat_loss, steady, patience=100)


def test_large_subspaces_polish_after_hard_thresholding_converges():
    """Beyond dense normal equations the polish is slow ALS: hard thresholding goes further."""
    X, y, B, _ = metasp.datasets.make_hps(T=60, m=30, d=70, s=3, sigma=0.05, random_state=0)
    small = dict(accel="cg", polish="als", random_state=0)
    dense = metasp.fit(X, y, 3, **small)
    tasks = metasp.Tasks.from_array(X, y)
    options = _core.SolveOptions()
    options.conjugate, options.polish, options.basis.max_dense = True, True, 100
    out = _core.solve(tasks.X, tasks.y, tasks.offsets, 3, options)
    assert out.n_iht_iter > np.sum(dense.history["phase"] == "iht")
    assert out.status == dense.status == "converged"
    assert sin_angle(out.B, dense.B) < 1e-8


def test_polish_stops_when_the_loss_stagnates():
    # At rank 8 on these days one direction (snow hours) is barely determined by the data: the
    # polish creeps along it while the loss no longer changes measurably.
    tasks = metasp.datasets.load_beijing_pm25().tasks.subset(np.arange(100))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = metasp.fit(tasks, s=8, heads="fixed", random_state=0, n_jobs=1)
        twin = metasp.reference.fit(tasks, s=8, random_state=0)
    assert any("no longer lowered the loss measurably" in str(w.message) for w in caught)
    assert result.status == twin.status == "stalled"
    assert result.history["phase"][-1] == "polish" and result.n_iter < 1000
    loss = result.history["loss"]
    assert loss[-11] - loss[-1] <= 1e-5 * loss[-1]
    assert twin.history["loss"][-1] == pytest.approx(loss[-1], rel=1e-6)


@pytest.mark.parametrize("fit", [metasp.fit, metasp.reference.fit])
def test_refine_is_the_former_name_of_polish(fit):
    X, y, _, _ = metasp.datasets.make_hps(T=20, m=8, d=10, s=2, sigma=0.1, random_state=0)
    options = dict(heads="fixed") if fit is metasp.fit else {}
    with pytest.warns(FutureWarning, match="refine was renamed polish"):
        renamed = fit(X, y, 2, refine=None, random_state=0, **options)
    polished = fit(X, y, 2, polish=None, random_state=0, **options)
    assert set(renamed.history["phase"]) == set(polished.history["phase"]) == {"iht"}
    np.testing.assert_array_equal(renamed.Theta, polished.Theta)
    with pytest.raises(TypeError, match="pass polish only"):
        fit(X, y, 2, refine=None, polish="als")


def test_solver_defaults_are_the_compiled_cores():
    """SolveOptions' defaults and the exported constants are the same C++ values."""
    options, constants = _core.SolveOptions(), _core.constants
    for name in ("switch_tol", "switch_window", "patience", "divergence_factor"):
        assert getattr(options, name) == constants[name]
    assert options.svd.tol == constants["svd_tol"] and options.svd.max_steps == constants[
        "svd_max_steps"]
    assert options.svd.relative_tol == constants["svd_relative_tol"] > 0
    assert options.basis.max_dense == constants["max_dense_normal"]
    assert _core.PolishOptions().basis.max_dense == constants["max_dense_normal"]
    assert options.init == "zero" and options.reference_B is None and options.starts == []
    assert not options.polish and metasp._validation.DIVERGENCE_FACTOR == options.divergence_factor


def test_solve_result_has_one_record_per_iteration():
    X, y, B, _ = small_noisy()
    tasks = metasp.Tasks.from_array(X, y)
    options = _core.SolveOptions()
    options.conjugate, options.polish, options.reference_B = True, True, B
    out = _core.solve(tasks.X, tasks.y, tasks.offsets, 3, options)
    history = out.history
    assert set(history) == {"loss", "step", "beta", "rel_change", "sin_angle", "svd_steps",
                            "phase", "seconds", "svd_seconds"}
    assert all(len(values) == out.n_iter for values in history.values())
    iht = history["phase"] == 0
    assert iht.sum() == out.n_iht_iter and 0 < out.n_iht_iter < out.n_iter
    assert np.isnan(history["step"][~iht]).all() and (history["svd_steps"][~iht] == 0).all()
    assert np.isfinite(history["step"][iht]).all() and (history["svd_steps"][iht] > 0).all()
    assert history["loss"][-1] == out.start_loss[0]
    options.reference_B = None
    assert len(_core.solve(tasks.X, tasks.y, tasks.offsets, 3, options).history["sin_angle"]) == 0


@pytest.mark.parametrize("field, value, error, match", [
    ("max_iter", -5, ValueError, "max_iter must be at least 1"),
    ("tol", float("nan"), ValueError, "tol must be non-negative"),
    ("divergence_factor", 0.5, ValueError, "divergence_factor must be greater than 1"),
    ("switch_window", 0, ValueError, "switch_window >= 1"),
    ("init", "bogus", ValueError, "init must be 'zero', 'spectral' or 'given'"),
    ("max_iter", 2**40, TypeError, "incompatible function arguments"),
    ("reference_B", np.eye(3, 25, dtype=np.complex128), TypeError,
     "incompatible function arguments"),
])
def test_bad_solve_options_are_refused(field, value, error, match):
    X, y, _, _ = small_noisy()
    tasks = metasp.Tasks.from_array(X, y)
    with pytest.raises(error, match=match):
        options = _core.SolveOptions()
        setattr(options, field, value)
        _core.solve(tasks.X, tasks.y, tasks.offsets, 3, options)
