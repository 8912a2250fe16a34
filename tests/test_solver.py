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
    options = dict(step=step, tol=0, max_iter=40, reference_B=B, accel=None, refine=None)
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
    result = metasp.fit(Xs, ys, 3, random_state=0, accel=None, refine=None)
    expected = metasp.reference.fit(Xs, ys, 3, accel=None, refine=None)
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
        options = dict(max_iter=5, tol=0, accel=accel, refine=None, random_state=5)
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
        options = dict(step=step, tol=0, max_iter=10, accel=accel, refine=None)
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
    options = dict(tol=0, max_iter=10, accel="cg", refine=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metasp.DiagnosticWarning)
        result = metasp.fit(Xs, ys, s, random_state=1, **options)
        expected = metasp.reference.fit(Xs, ys, s, **options)
    step = expected.history["step"]
    assert step[5] == 0.5 * step[4] and step[6] == 0.5 * step[5]
    np.testing.assert_allclose(result.history["step"], step, rtol=1e-9)
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=0,
                               atol=1e-9 * np.abs(expected.Theta).max())
