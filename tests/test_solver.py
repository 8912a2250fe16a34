"""The compiled solver against the NumPy reference and against the paper's iteration."""

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from conftest import DTYPES, ragged_tasks, with_dtype

import metasp
from metasp._tasks import as_tasks
from metasp.metrics import sin_angle


def projector(B):
    return B.T @ B


def assert_same_fit(result, expected, rtol):
    assert result.status == expected.status
    assert result.n_iter == expected.n_iter
    scale = np.abs(expected.Theta).max()
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(projector(result.B), projector(expected.B), rtol=0, atol=rtol)
    np.testing.assert_allclose(result.singular_values, expected.singular_values, rtol=rtol)
    np.testing.assert_allclose(result.history["loss"], expected.history["loss"], rtol=1e-6,
                               atol=1e-12 * expected.history["loss"][0])
    np.testing.assert_allclose(result.W @ result.B, result.Theta, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("step", ["auto", 0.2])
@pytest.mark.parametrize("layout", ["equal", "ragged"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(step, layout, dtype, strict_svd):
    if layout == "equal":
        X, y, B, _ = metasp.datasets.make_hps(T=80, m=12, d=25, s=3, sigma=0.1, random_state=3)
    else:
        X, y, B, _ = ragged_tasks()
    X = with_dtype(X, dtype)
    assert as_tasks(X, y).X.dtype == dtype  # the C++ core reads X in this dtype
    # The plain NIHT / fixed-step path: no conjugate directions, no polish.
    options = dict(step=step, tol=0, max_iter=40, reference_B=B, accel=None, polish=None)
    result = metasp.fit(X, y, 3, random_state=0, **options)
    expected = metasp.reference.fit(with_dtype(X, "float64"), y, 3, **options)
    assert_same_fit(result, expected, rtol=1e-11)
    np.testing.assert_allclose(result.history["sin_angle"], expected.history["sin_angle"],
                               rtol=1e-6, atol=1e-12)
    # Early steps are well conditioned; late adaptive steps are ratios of tiny numbers.
    np.testing.assert_allclose(result.history["step"][:20], expected.history["step"][:20],
                               rtol=1e-9)


def test_matches_reference_to_convergence():
    Xs, ys, _, _ = ragged_tasks(sigma=0.0, sizes=(10, 40))
    result = metasp.fit(Xs, ys, 3, random_state=0, accel=None, polish=None)
    expected = metasp.reference.fit(Xs, ys, 3, accel=None, polish=None)
    assert result.status == expected.status == "converged"
    assert abs(result.n_iter - expected.n_iter) <= 1
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0,
                               atol=1e-8 * np.abs(expected.Theta).max())


def paper_meta_sp(Xs, ys, s, gamma, n_iter):
    """Meta-SP exactly as published: a per-task gradient step, then rank-s truncation."""
    Theta = np.zeros((len(Xs), Xs[0].shape[1]))
    for _ in range(n_iter):
        for t, (X, y) in enumerate(zip(Xs, ys)):
            Theta[t] = Theta[t] + gamma / len(y) * X.T @ (y - X @ Theta[t])
        U, S, Vt = np.linalg.svd(Theta, full_matrices=False)
        Theta = (U[:, :s] * S[:s]) @ Vt[:s]
    return Theta, Vt[:s]


@pytest.mark.parametrize("fit", [metasp.fit, metasp.reference.fit])
def test_fixed_step_gives_the_papers_iterates(fit, strict_svd):
    Xs, ys, _, _ = ragged_tasks(T=40, d=15, s=2, seed=7)
    for n_iter in (1, 2, 25):
        Theta, B = paper_meta_sp(Xs, ys, 2, gamma=0.3, n_iter=n_iter)
        result = fit(Xs, ys, 2, step=0.3, init="zero", tol=0, max_iter=n_iter)
        assert result.n_iter == n_iter
        np.testing.assert_allclose(result.Theta, Theta, rtol=0, atol=1e-10 * np.abs(Theta).max())
        np.testing.assert_allclose(projector(result.B), projector(B), rtol=0, atol=1e-10)


def test_noiseless_recovery(noiseless):
    X, y, B, W = noiseless
    result = metasp.fit(X, y, 3, random_state=0)
    assert result.status == "converged"
    assert sin_angle(result.B, B) < 1e-6
    assert metasp.metrics.frobenius_error(result.Theta, W @ B) < 1e-6
    np.testing.assert_allclose(result.B @ result.B.T, np.eye(3), atol=1e-12)
    assert np.all(np.diff(result.singular_values) <= 0)


def test_adaptive_step_needs_fewer_iterations_than_a_safe_fixed_step(noiseless):
    X, y, B, _ = noiseless
    adaptive = metasp.fit(X, y, 3, random_state=0)
    fixed = metasp.fit(X, y, 3, step=0.25, random_state=0)
    assert fixed.status == adaptive.status == "converged"
    assert adaptive.n_iter < fixed.n_iter
    assert sin_angle(fixed.B, B) < 1e-6


def test_history(noiseless):
    X, y, B, _ = noiseless
    result = metasp.fit(X, y, 3, heads="fixed", reference_B=B, random_state=0)
    n = result.n_iter
    for key in ("loss", "step", "rel_change", "sin_angle", "svd_steps"):
        assert result.history[key].shape == (n,), key
    assert result.history["rel_change"][-1] <= 1e-10 < result.history["rel_change"][-2]
    assert result.history["sin_angle"][-1] == pytest.approx(sin_angle(result.B, B), abs=1e-14)
    assert result.history["loss"][-1] < 1e-12 * result.history["loss"][0]
    assert "sin_angle" not in metasp.fit(X, y, 3, heads="fixed", max_iter=3, tol=0).history


def test_history_times(noiseless):
    X, y, B, _ = noiseless
    result = metasp.fit(X, y, 3, heads="fixed", random_state=0)  # hard thresholding, then the polish
    history, n = result.history, result.n_iter
    assert history["seconds"].shape == history["svd_seconds"].shape == (n,)
    iht = history["phase"] == "iht"
    assert iht.any() and not iht.all()
    assert np.all(history["seconds"] > 0)
    assert np.all((history["svd_seconds"][iht] > 0)
                  & (history["svd_seconds"][iht] < history["seconds"][iht]))
    assert np.all(history["svd_seconds"][~iht] == 0)
    polished = metasp.polish(X, y, B)
    assert polished.history["seconds"].shape == (polished.n_iter,)
    assert np.all(polished.history["seconds"] > 0)
    assert "seconds" not in metasp.reference.fit(X, y, 3, max_iter=3, tol=0).history


def test_thread_count_does_not_change_the_result():
    # Large enough that the OpenMP loops really run in parallel.
    X, y, _, _ = metasp.datasets.make_hps(T=2000, m=20, d=50, s=4, sigma=0.1, random_state=2)
    one = metasp.fit(X, y, 4, n_jobs=1, max_iter=30, tol=0, random_state=5)
    two = metasp.fit(X, y, 4, n_jobs=2, max_iter=30, tol=0, random_state=5)
    np.testing.assert_allclose(two.Theta, one.Theta, rtol=1e-12, atol=0)
    np.testing.assert_allclose(two.history["loss"], one.history["loss"], rtol=1e-12)


def test_iterate_passes_do_not_depend_on_the_thread_count():
    # T * d above 2^20: the step, norms and copies over the T x d iterate run in parallel too.
    X, y, _, _ = metasp.datasets.make_hps(T=20000, m=5, d=55, s=3, sigma=0.1, random_state=3)
    tasks = metasp.Tasks.from_array(X, y)
    for accel in ("cg", None):
        options = dict(max_iter=5, tol=0, accel=accel, polish=None, random_state=5)
        one, two = (metasp.fit(tasks, None, 3, n_jobs=n, **options) for n in (1, 2))
        np.testing.assert_array_equal(two.Theta, one.Theta)
        np.testing.assert_array_equal(two.history["loss"], one.history["loss"])
        np.testing.assert_array_equal(two.history["rel_change"], one.history["rel_change"])


def test_max_iter_warns_and_says_what_to_do(noiseless):
    X, y, _, _ = noiseless
    with pytest.warns(metasp.ConvergenceWarning, match="increase max_iter"):
        result = metasp.fit(X, y, 3, max_iter=3)
    assert result.status == "max_iter" and result.n_iter == 3


@pytest.mark.parametrize("fit", [metasp.fit, metasp.reference.fit])
def test_divergence_is_reported_not_returned_as_nan(fit, noiseless):
    X, y, _, _ = noiseless  # m = 15 < d = 50: gamma = 1 overshoots
    with pytest.warns(metasp.DivergenceWarning, match="step='auto'"):
        result = fit(X, y, 3, step=1.0)
    assert result.status == "diverged"
    assert 0 < result.n_iter < 100
    for array in (result.Theta, result.W, result.B, result.singular_values):
        assert np.isfinite(array).all()


def test_overflow_is_reported_as_divergence():
    X, y, _, _ = metasp.datasets.make_hps(T=30, m=8, d=10, s=2, random_state=0)
    with pytest.warns(metasp.DivergenceWarning):
        result = metasp.fit(X * 1e150, y * 1e150, 2, step=1.0)
    assert result.status == "diverged"
    assert np.isfinite(result.Theta).all() and np.isfinite(result.B).all()


def test_ctrl_c_interrupts_a_long_solve():
    X, y, _, _ = metasp.datasets.make_hps(T=2000, m=20, d=50, s=4, random_state=0)
    tasks = metasp.Tasks.from_array(X, y)
    # Python's own Ctrl-C handler, whatever the test process inherited: a shell that starts
    # it in the background without job control ignores SIGINT, and Python keeps that.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # Millions of iterations: minutes of work unless interrupted.
            metasp.fit(tasks, s=4, step=0.01, tol=0, max_iter=10**7, n_jobs=1)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("seed", range(40))
def test_matches_reference_on_tiny_ragged_problems(seed):
    # Edge shapes: one task, one feature, single-sample tasks, s = min(T, d).
    rng = np.random.default_rng(seed)
    T, d = int(rng.integers(1, 8)), int(rng.integers(1, 9))
    s = int(rng.integers(1, min(T, d) + 1))
    Xs = [rng.standard_normal((int(rng.integers(1, 6)), d)) for _ in range(T)]
    ys = [rng.standard_normal(len(X)) for X in Xs]
    for step, accel in (("auto", None), (0.05, None), ("auto", "cg")):
        options = dict(step=step, tol=0, max_iter=10, accel=accel, polish=None)
        with warnings.catch_warnings():  # tiny problems are often below the information limit
            warnings.simplefilter("ignore", metasp.DiagnosticWarning)
            result = metasp.fit(Xs, ys, s, random_state=1, **options)
            expected = metasp.reference.fit(Xs, ys, s, **options)
        assert result.status == expected.status == "max_iter" and result.n_iter == 10
        np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0,
                                   atol=1e-9 * np.abs(expected.Theta).max())


def test_consecutive_backtracking_steps_match_reference():
    # A tiny problem on which CGIHT halves its step twice in a row (steps 5-7): the second
    # halving goes along the same direction, in the reference as in C++.
    rng = np.random.default_rng(2)
    T, d = int(rng.integers(1, 8)), int(rng.integers(1, 9))
    s = int(rng.integers(1, min(T, d) + 1))
    Xs = [rng.standard_normal((int(rng.integers(1, 6)), d)) for _ in range(T)]
    ys = [rng.standard_normal(len(X)) for X in Xs]
    options = dict(tol=0, max_iter=10, accel="cg", polish=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.DiagnosticWarning)
        result = metasp.fit(Xs, ys, s, random_state=1, **options)
        expected = metasp.reference.fit(Xs, ys, s, **options)
    step = expected.history["step"]
    assert step[5] == 0.5 * step[4] and step[6] == 0.5 * step[5]
    np.testing.assert_allclose(result.history["step"], step, rtol=1e-9)
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0,
                               atol=1e-9 * np.abs(expected.Theta).max())


# Data at the edges of the float64 range, through every entry point that fits: a result is
# finite with orthonormal B (so its status can be trusted), or the call raises an error that
# names what is out of range. Never NaN reported as converged, a B of norm 1e-310, or an input
# without any NaN said to contain some.
SX, SY, SB, _ = metasp.datasets.make_hps(T=40, m=10, d=8, s=2, sigma=0.1, random_state=0)


def _scaled(what, factor):
    X, y = SX.copy(), SY.copy()
    if what in ("X and y", "X"):
        X *= factor
    if what in ("X and y", "y"):
        y *= factor
    if what.startswith("task 3"):
        X[3] *= factor
        if what == "task 3":
            y[3] *= factor
    return X, y


SCALES = [("X and y", f) for f in (1e-300, 1e-160, 1e-100, 1e100, 1e150, 1e200, 1e300)] + [
    ("y", 0.0), ("y", 1e-160), ("y", 1e-300), ("y", 1e200), ("X", 1e-160), ("X", 1e160),
    ("X", 1e300), ("task 3", 1e-160), ("task 3", 1e-300), ("task 3 X", 1e-160),
    ("task 3 X", 1e160)]
FITTERS = {
    "fit": lambda X, y: metasp.fit(X, y, 2, random_state=0),
    "fit heads=fixed": lambda X, y: metasp.fit(X, y, 2, heads="fixed", random_state=0),
    "fit step=0.1": lambda X, y: metasp.fit(X, y, 2, step=0.1, max_iter=50, random_state=0),
    "reference.fit": lambda X, y: metasp.reference.fit(X, y, 2, random_state=0),
    "polish": lambda X, y: metasp.polish(X, y, SB),
    "altmin": lambda X, y: metasp.baselines.altmin(X, y, 2, max_iter=20),
    "burer_monteiro": lambda X, y: metasp.baselines.burer_monteiro(X, y, 2, max_iter=50),
    "nuclear_norm": lambda X, y: metasp.baselines.nuclear_norm(X, y, 2, lam=0.1, max_iter=50),
    "single_task": lambda X, y: metasp.baselines.single_task(X, y, 2, ridge=1e-3),
    "anil": lambda X, y: metasp.baselines.anil(X, y, 2, max_iter=20, random_state=0),
    "mom": lambda X, y: metasp.baselines.mom(X, y, 2),
}
OUT_OF_RANGE = (ValueError, FloatingPointError, OverflowError)


def assert_trustworthy(result):
    for name in ("B", "W", "Theta", "singular_values"):
        assert np.isfinite(getattr(result, name)).all(), name
    # NaN marks what does not apply: the step and beta of polish sweeps, diverged starts.
    for key, values in result.history.items():
        if np.asarray(values).dtype.kind == "f" and key not in ("step", "beta", "start_loss"):
            assert np.isfinite(values).all(), key
    np.testing.assert_allclose(result.B @ result.B.T, np.eye(result.rank), rtol=0, atol=1e-8)
    if result.head_mean is not None:
        assert np.isfinite(result.head_mean).all() and np.isfinite(result.head_cov).all()
        assert 0 < result.noise_variance < np.inf
        assert np.linalg.eigvalsh(result.head_cov).min() > 0


@pytest.mark.parametrize("what, factor", SCALES, ids=[f"{w}*{f:g}" for w, f in SCALES])
@pytest.mark.parametrize("fitter", FITTERS.values(), ids=FITTERS.keys())
def test_data_of_any_scale_fit_or_fail_saying_what_is_out_of_range(fitter, what, factor):
    X, y = _scaled(what, factor)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and diagnostic warnings
            result = fitter(X, y)
    except OUT_OF_RANGE as error:
        message = str(error)
        assert "impute" not in message and "contains NaN" not in message, message
        if factor != 0:  # all-zero targets are in range (the trace norm then has no subspace)
            assert any(word in message for word in ("float64", "range", "overflow",
                                                    "underflow", "2^-")), message
    else:
        assert_trustworthy(result)


def test_select_rank_on_data_of_extreme_scale():
    for what, factor in [("X and y", 1e-160), ("y", 0.0), ("X", 1e160)]:
        X, y = _scaled(what, factor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            selection = metasp.select_rank(X, y, ranks=(1, 2), cv=2, random_state=0)
        assert np.isfinite(selection.mean_mse).all() and np.isfinite(selection.std_mse).all()


# The subspace does not depend on the scale of X or of y, and the heads scale as y / X: where
# their products would leave the float64 range the data are rescaled internally (by powers of
# two, exactly), so these fits are the unscaled fit, scaled.
@pytest.mark.parametrize("x_exp, y_exp", [(-531, -531), (-900, -900), (400, 0), (0, -300),
                                          (300, 500), (-1000, 0)])
@pytest.mark.parametrize("fitter", ["fit", "fit heads=fixed", "reference.fit", "polish"])
def test_extreme_scales_are_fitted_as_the_unscaled_data(fitter, x_exp, y_exp):
    fit = FITTERS[fitter]
    plain = fit(SX, SY)
    with warnings.catch_warnings():
        # Only the head prior may be beyond float64 in the data's units.
        warnings.filterwarnings("ignore", "Meta-SP: The head prior is beyond the float64 range")
        scaled = fit(np.ldexp(SX, x_exp), np.ldexp(SY, y_exp))
    assert scaled.status == plain.status and scaled.n_iter == plain.n_iter
    np.testing.assert_allclose(scaled.B, plain.B, rtol=0, atol=1e-12)
    heads = y_exp - x_exp
    np.testing.assert_allclose(scaled.W, np.ldexp(plain.W, heads), rtol=1e-12, atol=0)
    loss = np.ldexp(plain.history["loss"], 2 * y_exp)
    if loss.min() >= np.finfo(float).tiny:  # else float64 keeps too few of their digits
        np.testing.assert_allclose(scaled.history["loss"], loss, rtol=1e-10)
    if scaled.head_mean is not None:
        np.testing.assert_allclose(scaled.noise_variance,
                                   np.ldexp(plain.noise_variance, 2 * y_exp), rtol=1e-10)
        np.testing.assert_allclose(scaled.head_cov, np.ldexp(plain.head_cov, 2 * heads),
                                   rtol=1e-8)


def test_a_task_far_below_the_others_is_named():
    X, y = _scaled("task 3", 1e-160)
    for fitter in ("fit", "fit heads=fixed", "reference.fit", "polish"):
        with pytest.raises(ValueError, match=r"task 3 \(1 of 40\) has X entries at most "
                                             r"\d\.\d+e-160, below 2\^-200 times"):
            FITTERS[fitter](X, y)


def test_targets_whose_squares_overflow_are_named():
    for fitter in ("fit", "fit heads=fixed", "reference.fit", "polish"):
        with pytest.raises(ValueError, match=r"the largest \|y\| is .*e\+200: its square"):
            FITTERS[fitter](SX, SY * 1e200)


def test_fixed_step_too_large_diverges_with_a_finite_last_iterate():
    with pytest.warns(metasp.DivergenceWarning):
        result = metasp.fit(SX * 1e100, SY * 1e100, 2, step=100.0, max_iter=50)
    assert result.status == "diverged"
    assert_trustworthy(result)


def test_tiny_fixed_step_is_not_converged_after_one_iteration():
    for fit in (metasp.fit, metasp.reference.fit):
        for step in (1e-300, 1e-320):
            with pytest.warns(metasp.ConvergenceWarning, match="max_iter=5"):
                result = fit(SX, SY, 2, step=step, max_iter=5)
            assert result.status == "max_iter" and result.n_iter == 5
            assert_trustworthy(result)


def test_all_zero_targets_are_a_converged_fit_at_zero():
    for heads in ("random", "fixed"):
        result = metasp.fit(SX, np.zeros_like(SY), 2, heads=heads, random_state=0)
        assert result.status == "converged"
        assert_trustworthy(result)
        assert np.abs(result.Theta).max() == 0
