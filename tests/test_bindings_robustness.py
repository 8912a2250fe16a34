"""The private bindings in metasp._core answer malformed input with a Python exception.

These calls bypass the Python validation, so the C++ checks (and pybind11's no-convert
argument casters) are all that stands between a bad argument and an out-of-bounds read. The
whole table is first run in a subprocess: a case that crashes the interpreter fails there,
and is then not run in the pytest process, so a segfault is a clear failure, not a dead run.
"""

import subprocess
import sys

import numpy as np
import pytest

from metasp import _core

T, M, D, S = 6, 5, 4, 2
N = T * M
_rng = np.random.default_rng(0)
X = _rng.standard_normal((N, D))
Y = _rng.standard_normal(N)
OFFSETS = np.arange(T + 1, dtype=np.int64) * M
THETA = np.zeros((T, D))
C = _rng.standard_normal((T, S))
B = np.linalg.qr(_rng.standard_normal((D, S)))[0]  # (d, r), as task_curvature takes it
A = _rng.standard_normal((T, D))


def solve(X=X, y=Y, offsets=OFFSETS, s=S, **fields):
    """_core.solve with SolveOptions' fields set from ``fields`` (3 iterations, tol 0 unless
    given): a bad field value is refused where it is set or in the call."""
    options = _core.SolveOptions()
    for name, value in {"max_iter": 3, "tol": 0.0, **fields}.items():
        setattr(options, name, value)
    return _core.solve(X, y, offsets, s, options)


def gradient(X=X, y=Y, offsets=OFFSETS, Theta=THETA, V=None, n_threads=1):
    return _core.task_gradient(X, y, offsets, Theta, V, n_threads)


def fused_gradient(V=B, **kwargs):
    """task_gradient with the subspace V: the pass that also computes the adaptive step."""
    return gradient(V=V, **kwargs)


def curvature(X=X, y=Y, offsets=OFFSETS, C=C, B=B, n_threads=1):
    return _core.task_curvature(X, y, offsets, C, B, n_threads)


def svd(A=A, s=S, warm_start=None, n_threads=1, tol=1e-12, max_steps=300):
    return _core.truncated_svd(A, s, warm_start, 0, n_threads, tol, max_steps)


def statistics(X=X, y=Y, offsets=OFFSETS, V=B, W=None, n_threads=1):
    return _core.task_statistics(X, y, offsets, V, W, n_threads)


def fused_statistics(W=C, **kwargs):
    """task_statistics with heads W: the pass that also computes the gradient at W B^T."""
    return statistics(W=W, **kwargs)


def task_heads(X=X, y=Y, offsets=OFFSETS, V=B, n_threads=1):
    return _core.task_heads(X, y, offsets, V, n_threads)


def basis_sums(X=X, y=Y, offsets=OFFSETS, W=C, V=B, n_threads=1):
    """basis_system_sums of the Newton step (with V); V=None gives the ALS system."""
    return _core.basis_system_sums(X, y, offsets, W, V, n_threads)


def newton(X=X, y=Y, offsets=OFFSETS, W=C, V=B, D=None, n_threads=1):
    """newton_sums: the Newton system's terms, or its product with D."""
    return _core.newton_sums(X, y, offsets, W, V, D, n_threads)


_Z = (X @ B).reshape(T, M, S)
GRAM = np.einsum("tms,tmr->tsr", _Z, _Z)
CROSS = np.einsum("tms,tm->ts", _Z, Y.reshape(T, M))
SQUARES = np.sum(Y.reshape(T, M) ** 2, axis=1)


MEAN, COV = np.zeros(S), np.eye(S)


def em_step(gram=GRAM, cross=CROSS, squares=SQUARES, mean=MEAN, cov=COV, noise=1.0,
            n=float(N), floor=0.0, n_threads=1):
    return _core.head_prior_em_step(gram, cross, squares, mean, cov, noise, n, floor, n_threads)


def with_entry(array, index, value):
    out = array.copy()
    out[index] = value
    return out


BINDING_ERROR = "incompatible function arguments"  # pybind11 refusing a dtype or a layout

# Broken task data, fed to each of the functions that read a TasksView:
# (description, keyword arguments, exception, regex).
BAD_TASK_DATA = [
    ("offsets past the end of X", dict(offsets=with_entry(OFFSETS, -1, N + 10)), ValueError,
     r"offsets\[-1\] must equal the number of rows of X"),
    ("offsets far past the end of X", dict(offsets=with_entry(OFFSETS, -1, 2**62)), ValueError,
     r"offsets\[-1\] must equal"),
    ("an inner offset past the end of X", dict(offsets=with_entry(OFFSETS, 2, 10 * N)),
     ValueError, r"offsets must increase strictly \(task 2"),
    ("offsets[0] != 0", dict(offsets=with_entry(OFFSETS, 0, 1)), ValueError,
     r"offsets\[0\] must be 0"),
    ("negative offsets[0]", dict(offsets=with_entry(OFFSETS, 0, -M)), ValueError,
     r"offsets\[0\] must be 0"),
    ("decreasing offsets", dict(offsets=with_entry(OFFSETS, 2, M - 1)), ValueError,
     r"offsets must increase strictly \(task 1"),
    ("a repeated offset (empty task)", dict(offsets=with_entry(OFFSETS, 2, M)), ValueError,
     r"offsets must increase strictly \(task 1"),
    ("a negative inner offset", dict(offsets=with_entry(OFFSETS, 1, -3)), ValueError,
     r"offsets must increase strictly \(task 0"),
    ("a single offset", dict(offsets=np.zeros(1, np.int64)), ValueError, r"at least 2 entries"),
    ("no offsets", dict(offsets=np.zeros(0, np.int64)), ValueError, r"at least 2 entries"),
    ("y shorter than X", dict(y=Y[:-1].copy()), ValueError, r"X has 30 rows but y has 29"),
    ("y longer than X", dict(y=np.append(Y, 0.0)), ValueError, r"X has 30 rows but y has 31"),
    ("float16 X", dict(X=X.astype(np.float16)), TypeError, BINDING_ERROR),
    ("int64 X", dict(X=X.astype(np.int64)), TypeError, BINDING_ERROR),
    ("big-endian X", dict(X=X.astype(">f8")), TypeError, BINDING_ERROR),
    ("1-D X", dict(X=X.ravel()), TypeError, BINDING_ERROR),
    ("Fortran-order X", dict(X=np.asfortranarray(X)), TypeError, BINDING_ERROR),
    ("Fortran-order float32 X", dict(X=np.asfortranarray(X, dtype=np.float32)), TypeError,
     BINDING_ERROR),
    ("non-contiguous X[:, ::2]", dict(X=np.repeat(X, 2, axis=1)[:, ::2]), TypeError,
     BINDING_ERROR),
    ("X as a list", dict(X=X.tolist()), TypeError, BINDING_ERROR),
    ("float32 y", dict(y=Y.astype(np.float32)), TypeError, BINDING_ERROR),
    ("non-contiguous y[::2]", dict(y=np.repeat(Y, 2)[::2]), TypeError, BINDING_ERROR),
    ("int32 offsets", dict(offsets=OFFSETS.astype(np.int32)), TypeError, BINDING_ERROR),
    ("float offsets", dict(offsets=OFFSETS.astype(np.float64)), TypeError, BINDING_ERROR),
    ("non-contiguous offsets", dict(offsets=np.repeat(OFFSETS, 2)[::2]), TypeError,
     BINDING_ERROR),
]

# (description, callable, exception, regex)
CASES = [
    *[(f"{name}: {description}", lambda f=f, kwargs=kwargs: f(**kwargs), error, match)
      for description, kwargs, error, match in BAD_TASK_DATA
      for name, f in (("solve", solve), ("task_gradient", gradient),
                      ("task_gradient with V", fused_gradient), ("task_curvature", curvature),
                      ("task_statistics", statistics),
                      ("task_statistics with W", fused_statistics),
                      ("task_heads", task_heads), ("basis_system_sums", basis_sums),
                      ("newton_sums", newton))],
    ("newton_sums: W with T+1 rows", lambda: newton(W=np.zeros((T + 1, S))), ValueError,
     r"W must have shape \(T, s\) = \(6, 2\)"),
    ("newton_sums: D of another shape", lambda: newton(D=np.zeros((D, S + 1))), ValueError,
     r"D must have the shape of V"),
    ("newton_sums: V with d+1 rows", lambda: newton(V=np.eye(D + 1, S)), ValueError,
     r"V must have shape \(d, s\)"),
    ("task_heads: V with d+1 rows", lambda: task_heads(V=np.eye(D + 1, S)), ValueError,
     r"V must have shape \(d, s\)"),
    ("task_heads: V without columns", lambda: task_heads(V=np.zeros((D, 0))), ValueError,
     r"s >= 1"),
    ("basis_system_sums: W with T+1 rows", lambda: basis_sums(W=np.zeros((T + 1, S))),
     ValueError, r"W must have shape \(T, s\)"),
    ("basis_system_sums: W without columns", lambda: basis_sums(W=np.zeros((T, 0)), V=None),
     ValueError, r"W must have shape \(T, s\)"),
    ("basis_system_sums: V with another s", lambda: basis_sums(V=np.eye(D, S + 1)), ValueError,
     r"the same number of columns"),
    ("basis_system_sums: V with d+1 rows", lambda: basis_sums(V=np.eye(D + 1, S)), ValueError,
     r"V must have shape \(d, s\)"),
    ("solve: s = 0", lambda: solve(s=0), ValueError, r"1 <= s <= min\(T, d\)"),
    ("solve: s < 0", lambda: solve(s=-1), ValueError, r"1 <= s <= min\(T, d\)"),
    ("solve: s > min(T, d)", lambda: solve(s=D + 1), ValueError, r"1 <= s <= min\(T, d\)"),
    ("solve: s > T", lambda: solve(X=X[:3 * M], y=Y[:3 * M], offsets=OFFSETS[:4], s=4),
     ValueError, r"1 <= s <= min\(T, d\)"),
    ("solve: s beyond int64", lambda: solve(s=2**70), TypeError, BINDING_ERROR),
    ("solve: max_iter = 0", lambda: solve(max_iter=0), ValueError, r"max_iter must be at least 1"),
    ("solve: negative max_iter", lambda: solve(max_iter=-5), ValueError,
     r"max_iter must be at least 1"),
    ("solve: n_threads = 0", lambda: solve(n_threads=0), ValueError,
     r"n_threads must be at least 1"),
    ("solve: negative n_threads", lambda: solve(n_threads=-2), ValueError,
     r"n_threads must be at least 1"),
    ("solve: negative seed", lambda: solve(seed=-1), TypeError, BINDING_ERROR),
    ("solve: fixed step 0", lambda: solve(adaptive_step=False, step=0.0), ValueError,
     r"fixed step must be positive and finite"),
    ("solve: fixed step nan", lambda: solve(adaptive_step=False, step=float("nan")), ValueError,
     r"fixed step must be positive and finite"),
    ("solve: negative tol", lambda: solve(tol=-1.0), ValueError, r"tol must be non-negative"),
    ("solve: reference_B (s+1, d)", lambda: solve(reference_B=np.eye(S + 1, D)), ValueError,
     r"reference_B must have shape \(s, d\)"),
    ("solve: reference_B (s, d-1)", lambda: solve(reference_B=np.eye(S, D - 1)), ValueError,
     r"reference_B must have shape \(s, d\)"),
    ("solve: reference_B (d, s)", lambda: solve(reference_B=np.eye(D, S)), ValueError,
     r"reference_B must have shape \(s, d\)"),
    ("solve: reference_B 1-D", lambda: solve(reference_B=np.ones(D)), ValueError,
     r"reference_B must have shape \(s, d\)"),
    ("task_gradient: Theta with T+1 rows", lambda: gradient(Theta=np.zeros((T + 1, D))),
     ValueError, r"Theta has the wrong shape"),
    ("task_gradient: Theta with d-1 columns", lambda: gradient(Theta=np.zeros((T, D - 1))),
     ValueError, r"Theta has the wrong shape"),
    ("task_gradient: Theta transposed", lambda: gradient(Theta=np.zeros((D, T))), ValueError,
     r"Theta has the wrong shape"),
    ("task_gradient: 1-D Theta", lambda: gradient(Theta=np.zeros(T * D)), ValueError,
     r"Theta has the wrong shape"),
    ("task_gradient: Fortran-order Theta", lambda: gradient(Theta=np.asfortranarray(A)),
     TypeError, BINDING_ERROR),
    ("task_gradient: float32 Theta", lambda: gradient(Theta=THETA.astype(np.float32)),
     TypeError, BINDING_ERROR),
    ("task_gradient: V with d+1 rows", lambda: fused_gradient(V=np.eye(D + 1, S)), ValueError,
     r"V must have d rows"),
    ("task_gradient: V with d-1 rows", lambda: fused_gradient(V=np.eye(D - 1, S)), ValueError,
     r"V must have d rows"),
    ("task_gradient: V transposed", lambda: fused_gradient(V=B.T), ValueError,
     r"V must have d rows"),
    ("task_gradient with V: Theta with T+1 rows",
     lambda: fused_gradient(Theta=np.zeros((T + 1, D))), ValueError, r"Theta has the wrong shape"),
    ("task_curvature: C with T-1 rows", lambda: curvature(C=C[:-1].copy()), ValueError,
     r"C has the wrong shape"),
    ("task_curvature: C with more columns than B", lambda: curvature(C=np.zeros((T, S + 1))),
     ValueError, r"C has the wrong shape"),
    ("task_curvature: B with d+1 rows", lambda: curvature(B=np.zeros((D + 1, S))), ValueError,
     r"B must have one row per feature"),
    ("task_curvature: B with d-1 rows", lambda: curvature(B=B[:-1]), ValueError,
     r"B must have one row per feature"),
    ("task_curvature: B transposed", lambda: curvature(B=B.T), ValueError,
     r"C has the wrong shape|B must have one row per feature"),
    ("task_curvature: Fortran-order C", lambda: curvature(C=np.asfortranarray(C)), TypeError,
     BINDING_ERROR),
    ("truncated_svd: s = 0", lambda: svd(s=0), ValueError, r"1 <= s <= min\(T, d\)"),
    ("truncated_svd: s > min(T, d)", lambda: svd(s=D + 1), ValueError, r"1 <= s <= min\(T, d\)"),
    ("truncated_svd: s > T", lambda: svd(A=A[:1], s=2), ValueError, r"1 <= s <= min\(T, d\)"),
    ("truncated_svd: warm_start with d+1 rows", lambda: svd(warm_start=np.ones((D + 1, 2))),
     ValueError, r"warm_start must have one row per column of A"),
    ("truncated_svd: warm_start with d-1 rows", lambda: svd(warm_start=np.ones((D - 1, 2))),
     ValueError, r"warm_start must have one row per column of A"),
    ("truncated_svd: max_steps = 0", lambda: svd(max_steps=0), ValueError,
     r"max_steps >= 1"),
    ("truncated_svd: negative tol", lambda: svd(tol=-1.0), ValueError, r"tol >= 0"),
    ("truncated_svd: float32 A", lambda: svd(A=A.astype(np.float32)), TypeError, BINDING_ERROR),
    ("truncated_svd: Fortran-order A", lambda: svd(A=np.asfortranarray(A)), TypeError,
     BINDING_ERROR),
    ("truncated_svd: non-contiguous A[:, ::2]", lambda: svd(A=np.repeat(A, 2, axis=1)[:, ::2]),
     TypeError, BINDING_ERROR),
    ("truncated_svd: A as a list", lambda: svd(A=A.tolist()), TypeError, BINDING_ERROR),
    ("task_statistics: V with d+1 rows", lambda: statistics(V=np.eye(D + 1, S)), ValueError,
     r"V must have shape \(d, s\) with d = 4"),
    ("task_statistics: V with d-1 rows", lambda: statistics(V=B[:-1]), ValueError,
     r"V must have shape \(d, s\)"),
    ("task_statistics: V transposed", lambda: statistics(V=B.T), ValueError,
     r"V must have shape \(d, s\)"),
    ("task_statistics: V without columns", lambda: statistics(V=np.zeros((D, 0))), ValueError,
     r"s >= 1"),
    ("task_statistics: V as text", lambda: statistics(V="B"), TypeError, BINDING_ERROR),
    ("task_statistics: W with T+1 rows", lambda: fused_statistics(W=np.zeros((T + 1, S))),
     ValueError, r"W must have shape \(T, s\) = \(6, 2\)"),
    ("task_statistics: W with s+1 columns", lambda: fused_statistics(W=np.zeros((T, S + 1))),
     ValueError, r"W must have shape \(T, s\)"),
    ("task_statistics: 1-D W", lambda: fused_statistics(W=np.zeros(T * S)), ValueError,
     r"W must have shape \(T, s\)"),
    ("head_prior_em_step: 2-D gram", lambda: em_step(gram=GRAM.reshape(T, S * S)), ValueError,
     r"gram must have shape \(T, s, s\)"),
    ("head_prior_em_step: gram (T, s, s+1)", lambda: em_step(gram=np.zeros((T, S, S + 1))),
     ValueError, r"gram must have shape \(T, s, s\)"),
    ("head_prior_em_step: gram with T+1 tasks", lambda: em_step(gram=np.zeros((T + 1, S, S))),
     ValueError, r"gram must have shape \(T, s, s\) = \(6, 2, 2\)"),
    ("head_prior_em_step: gram for s+1", lambda: em_step(gram=np.zeros((T, S + 1, S + 1))),
     ValueError, r"gram must have shape \(T, s, s\) = \(6, 2, 2\)"),
    ("head_prior_em_step: float32 gram", lambda: em_step(gram=GRAM.astype(np.float32)),
     TypeError, BINDING_ERROR),
    ("head_prior_em_step: Fortran-order gram", lambda: em_step(gram=np.asfortranarray(GRAM)),
     TypeError, BINDING_ERROR),
    ("head_prior_em_step: gram as a list", lambda: em_step(gram=GRAM.tolist()), TypeError,
     BINDING_ERROR),
    ("head_prior_em_step: float32 cross", lambda: em_step(cross=CROSS.astype(np.float32)),
     TypeError, BINDING_ERROR),
    ("head_prior_em_step: no tasks", lambda: em_step(gram=GRAM[:0], cross=CROSS[:0],
                                                     squares=SQUARES[:0]),
     ValueError, r"cross must have shape \(T, s\) with T, s >= 1"),
    ("head_prior_em_step: s = 0", lambda: em_step(gram=np.zeros((T, 0, 0)),
                                                  cross=np.zeros((T, 0)), mean=np.zeros(0),
                                                  cov=np.zeros((0, 0))),
     ValueError, r"cross must have shape \(T, s\) with T, s >= 1"),
    ("head_prior_em_step: squares with T-1 entries", lambda: em_step(squares=SQUARES[:-1].copy()),
     ValueError, r"squares must have shape \(T,\)"),
    ("head_prior_em_step: mean with s+1 entries", lambda: em_step(mean=np.zeros(S + 1)),
     ValueError, r"mean and cov must have shapes \(s,\) and \(s, s\) with s = 2"),
    ("head_prior_em_step: cov (s+1, s+1)", lambda: em_step(cov=np.eye(S + 1)), ValueError,
     r"mean and cov must have shapes"),
    ("head_prior_em_step: indefinite cov", lambda: em_step(cov=-np.eye(S)), ValueError,
     r"cov must be symmetric positive definite"),
    ("head_prior_em_step: singular cov", lambda: em_step(cov=np.zeros((S, S))), ValueError,
     r"cov must be symmetric positive definite"),
    ("head_prior_em_step: noise = 0", lambda: em_step(noise=0.0), ValueError,
     r"noise must be positive and finite"),
    ("head_prior_em_step: noise nan", lambda: em_step(noise=float("nan")), ValueError,
     r"noise must be positive and finite"),
    ("head_prior_em_step: noise inf", lambda: em_step(noise=float("inf")), ValueError,
     r"noise must be positive and finite"),
    ("head_prior_em_step: n = 0", lambda: em_step(n=0.0), ValueError, r"n must be positive"),
    ("head_prior_em_step: negative floor", lambda: em_step(floor=-1.0), ValueError,
     r"floor must be non-negative and finite"),
    ("head_prior_em_step: nan floor", lambda: em_step(floor=float("nan")), ValueError,
     r"floor must be non-negative and finite"),
    *[pytest.param(call, ValueError, r"n_threads", id=f"{name}: n_threads = {n}")
      for n in (0, -1)
      for name, call in (("task_gradient", lambda n=n: gradient(n_threads=n)),
                         ("task_curvature", lambda n=n: curvature(n_threads=n)),
                         ("task_statistics", lambda n=n: statistics(n_threads=n)),
                         ("head_prior_em_step", lambda n=n: em_step(n_threads=n)),
                         ("truncated_svd", lambda n=n: svd(n_threads=n)))],
]
PARAMS = [case if hasattr(case, "marks") else pytest.param(*case[1:], id=case[0])
          for case in CASES]
CALLS = [case.values[0] for case in PARAMS]

# Runs the calls from index argv[2] on in a fresh interpreter, printing a line after each one
# that returned (with or without an exception).
_SUBPROCESS = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("robustness_cases", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for index in range(int(sys.argv[2]), len(module.CALLS)):
    try:
        module.CALLS[index]()
    except Exception:
        pass
    print("finished case", index, flush=True)
"""
MAX_CRASHES = 5
AT_EXIT = -1  # the key of a crash after the last call


@pytest.fixture(scope="module")
def crashes():
    """{case index: what happened} for the calls that kill the interpreter.

    One subprocess runs the whole table; after a crash, a new one resumes after the crashing
    call, so every crash is pinned on its own case.
    """
    found, start = {}, 0
    while start < len(CALLS) and len(found) < MAX_CRASHES:
        run = subprocess.run([sys.executable, "-c", _SUBPROCESS, __file__, str(start)],
                             capture_output=True, text=True, timeout=120)
        finished = {int(line.split()[-1]) for line in run.stdout.splitlines()
                    if line.startswith("finished case ")}
        unfinished = sorted(set(range(start, len(CALLS))) - finished)
        if run.returncode == 0 and not unfinished:
            break
        if not unfinished:  # every call returned, then the interpreter failed on exit
            found[AT_EXIT] = f"exit code {run.returncode} at exit: {run.stderr[-1000:]}"
            break
        found[unfinished[0]] = f"exit code {run.returncode}: {run.stderr[-1000:]}"
        start = unfinished[0] + 1
    return found


@pytest.fixture(scope="module")
def baseline():
    """Run the table's baseline arguments, which are valid: so each case fails for its one
    change only (and a changed binding signature cannot make the TypeError cases pass)."""
    return dict(gradient=gradient(), fused_gradient=fused_gradient(), curvature=curvature(),
                V=svd()["V"], solve=solve(reference_B=np.ascontiguousarray(B.T)),
                statistics=statistics(), fused_statistics=fused_statistics(), em_step=em_step())


def test_baseline_calls_succeed(baseline):
    G, loss, projected, curvature_ = baseline["gradient"]
    assert G.shape == (T, D) and loss.shape == (T,) and np.isfinite(loss).all()
    assert projected is None and curvature_ is None
    G_fused, loss_fused, projected, curvature_ = baseline["fused_gradient"]
    np.testing.assert_allclose(G_fused, G, rtol=1e-12)
    np.testing.assert_allclose(loss_fused, loss, rtol=1e-12)
    assert projected.shape == curvature_.shape == (T,) and (projected > 0).all()
    assert baseline["curvature"].shape == (T,) and (baseline["curvature"] > 0).all()
    V, out = baseline["V"], baseline["solve"]
    np.testing.assert_allclose(V.T @ V, np.eye(S), atol=1e-12)
    assert out.Theta.shape == (T, D) and out.n_iter == 3 and len(out.history["sin_angle"]) == 3
    assert _core.max_threads() >= 1
    gram, cross, squares, none = baseline["statistics"]
    np.testing.assert_allclose(gram, GRAM, rtol=1e-12)
    np.testing.assert_allclose(cross, CROSS, rtol=1e-12)
    np.testing.assert_allclose(squares, SQUARES, rtol=1e-12)
    assert none is None
    G_heads = baseline["fused_statistics"][3]
    np.testing.assert_allclose(G_heads, gradient(Theta=C @ B.T)[0], rtol=1e-12)
    mean, cov, noise, log_likelihood = baseline["em_step"]
    assert mean.shape == (S,) and cov.shape == (S, S) and noise > 0
    assert np.isfinite(log_likelihood)


def test_no_malformed_call_crashes_the_interpreter(crashes):
    assert not crashes, "\n".join(
        f"{PARAMS[index].id if index != AT_EXIT else 'at exit'}: {what}"
        for index, what in crashes.items())


@pytest.mark.parametrize("call, error, match", PARAMS)
def test_malformed_call_raises(baseline, crashes, call, error, match):
    index = CALLS.index(call)
    if index in crashes:
        pytest.fail(f"crashed the interpreter in a subprocess ({crashes[index]}); not run here")
    if len(crashes) == MAX_CRASHES and index > max(crashes):
        pytest.fail("not run here: too many crashes before this case in the subprocess runs")
    with pytest.raises(error, match=match) as info:
        call()
    assert info.type is error


# Thread counts far above the hardware's, run in a fresh interpreter: OpenMP allocates per
# requested thread, so an unchecked count crashes the process (a segfault from 10**5 threads,
# an abort allocating 481 GB at 2**31 - 1). Every entry point caps them at the hardware's (or
# rejects them with ValueError). The data are large enough for the kernels to go parallel.
_HUGE_N_JOBS = """
import sys, warnings
import numpy as np
import metasp
from metasp import _core, baselines, kernels

warnings.simplefilter("ignore")  # ConvergenceWarning of the short runs
T, m, d, s = 256, 64, 80, 2
X, y, B, _ = metasp.datasets.make_hps(T=T, m=m, d=d, s=s, sigma=0.1, random_state=0)
tasks = metasp.Tasks.from_array(X, y)
Theta = np.zeros((T, d))
U = np.linalg.qr(np.random.default_rng(0).standard_normal((d, s)))[0]
C = np.ones((T, s))
G = kernels.gradient(tasks, Theta).G
offsets = np.asarray(tasks.offsets, dtype=np.int64)
stats = kernels.task_statistics(tasks, U.T)
fit_options = dict(max_iter=5, tol=1e-6, random_state=0)


def solve_options(**fields):
    options = _core.SolveOptions()
    for name, value in fields.items():
        setattr(options, name, value)
    return options


ENTRIES = {
    "fit": lambda n: metasp.fit(X, y, s, n_jobs=n, **fit_options),
    "fit heads=fixed": lambda n: metasp.fit(X, y, s, heads="fixed", n_jobs=n, **fit_options),
    "reference.fit": lambda n: metasp.reference.fit(X[:20], y[:20], s, n_jobs=n, max_iter=3),
    "polish": lambda n: metasp.polish(X, y, B, n_jobs=n, max_iter=3),
    "select_rank": lambda n: metasp.select_rank(X, y, ranks=(1, 2), cv=2, random_state=0,
                                                n_jobs=n, max_iter=5),
    "baselines.altmin": lambda n: baselines.altmin(X, y, s, max_iter=2, n_jobs=n),
    "baselines.altmin_gd": lambda n: baselines.altmin_gd(X, y, s, max_iter=2, n_jobs=n),
    "baselines.anil": lambda n: baselines.anil(X, y, s, max_iter=2, random_state=0, n_jobs=n),
    "baselines.burer_monteiro": lambda n: baselines.burer_monteiro(X, y, s, max_iter=2,
                                                                   n_jobs=n),
    "baselines.nuclear_norm": lambda n: baselines.nuclear_norm(X, y, s, lam=0.1, max_iter=2,
                                                               n_jobs=n),
    "baselines.single_task": lambda n: baselines.single_task(X, y, s, ridge=1.0, n_jobs=n),
    "kernels.gradient": lambda n: kernels.gradient(tasks, Theta, subspace=U, n_jobs=n),
    "kernels.curvature": lambda n: kernels.curvature(tasks, C, U, n_jobs=n),
    "kernels.task_statistics": lambda n: kernels.task_statistics(tasks, U.T, heads=C,
                                                                 n_jobs=n),
    "kernels.marginal_pass": lambda n: kernels.marginal_pass(tasks, U, 0.5, n_jobs=n),
    "kernels.truncated_svd": lambda n: kernels.truncated_svd(G, s, n_jobs=n),
    # The compiled core caps what reaches it too (C ints: 2**31 - 1 at most).
    "_core.task_gradient": lambda n: _core.task_gradient(tasks.X, tasks.y, offsets, Theta, U,
                                                         min(n, 2**31 - 1)),
    "_core.truncated_svd": lambda n: _core.truncated_svd(G, s, None, 0, min(n, 2**31 - 1),
                                                         1e-12, 300),
    "_core.head_prior_em_step": lambda n: _core.head_prior_em_step(
        stats.gram, stats.cross, stats.squares, np.zeros(s), np.eye(s), 1.0, float(T * m),
        0.0, min(n, 2**31 - 1)),
    "_core.solve": lambda n: _core.solve(tasks.X, tasks.y, offsets, s,
                                         solve_options(max_iter=3, tol=0.0,
                                                       n_threads=min(n, 2**31 - 1))),
}
for n in map(int, sys.argv[1:]):
    for name, call in ENTRIES.items():
        print("start", name, n, flush=True)
        try:
            call(n)
        except ValueError as error:
            assert "n_jobs" in str(error), (name, n, error)
            print("rejected", name, n, flush=True)
        else:
            print("ran", name, n, flush=True)
"""


HUGE_N_JOBS = [10**5, 10**6, 2**31 - 1, 2**31, 10**30]


def test_huge_n_jobs_is_capped_at_every_entry_point():
    run = subprocess.run([sys.executable, "-c", _HUGE_N_JOBS, *map(str, HUGE_N_JOBS)],
                         capture_output=True, text=True, timeout=600)
    started = [line for line in run.stdout.splitlines() if line.startswith("start ")]
    assert run.returncode == 0, (
        f"{started[-1] if started else 'before the first call'}: exit code "
        f"{run.returncode}: {run.stderr[-2000:]}")
    finished = [line for line in run.stdout.splitlines() if line.startswith(("ran ", "rejected "))]
    assert len(finished) == len(started) == 20 * len(HUGE_N_JOBS)


def _run_python(code: str, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


# Interpreter exit while a call runs with the GIL released in a daemon thread: Python ends
# threads that wait for the GIL during finalisation with pthread_exit, which aborted the
# process ("terminate called without an active exception") when it unwound through the
# bindings. The exit must be clean: the threads park until the process ends.
_EXIT_DURING_CALL = """
import sys, threading, time
import numpy as np
import metasp
from metasp import kernels

which = sys.argv[1]
X, y, _, _ = metasp.datasets.make_hps(T=3000, m=30, d=100, s=5, sigma=0.1, random_state=0)
A = np.random.default_rng(0).standard_normal((3000, 2000))
calls = {  # each takes seconds
    "fit": lambda: metasp.fit(X, y, 5, n_jobs=1, n_starts=50),
    "fit heads=fixed": lambda: metasp.fit(X, y, 5, heads="fixed", polish=None, tol=0,
                                          max_iter=10**6),
    "truncated_svd": lambda: kernels.truncated_svd(A, 10, tol=1e-14),
}
started = threading.Event()

def work():
    started.set()
    calls[which]()
    print("the call finished before the exit: the test measures nothing", flush=True)

threading.Thread(target=work, daemon=True).start()
started.wait()
time.sleep(float(sys.argv[2]))
print("exiting", flush=True)
"""


@pytest.mark.parametrize("call", ["fit", "fit heads=fixed", "truncated_svd"])
@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_interpreter_exit_during_a_call_in_a_daemon_thread_is_clean(call, delay):
    run = subprocess.run([sys.executable, "-c", _EXIT_DURING_CALL, call, str(delay)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit code {run.returncode}: {run.stderr[-2000:]}"
    assert "terminate called" not in run.stderr
    assert run.stdout.splitlines()[-1:] == ["exiting"]
    assert "finished before the exit" not in run.stdout


# Ctrl-C while the main thread waits in join() for a thread running a fit: the interpreter
# exits (after the thread, when it is not a daemon) with KeyboardInterrupt, never an abort.
_CTRL_C_DURING_JOIN = """
import os, signal, sys, threading
import metasp

signal.signal(signal.SIGINT, signal.default_int_handler)  # a background process ignores it
heads, daemon = sys.argv[1], sys.argv[2] == "daemon"
X, y, _, _ = metasp.datasets.make_hps(T=3000, m=30, d=100, s=5, sigma=0.1, random_state=0)
started = threading.Event()

def work():
    started.set()
    if heads == "fixed":  # plain hard thresholding for a million iterations: minutes
        metasp.fit(X, y, 5, heads="fixed", polish=None, tol=0, max_iter=10**6)
    else:
        metasp.fit(X, y, 5, n_jobs=1)

thread = threading.Thread(target=work, daemon=daemon)
thread.start()
started.wait()
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
thread.join()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("heads", ["random", "fixed"])
@pytest.mark.parametrize("daemon", ["daemon", "normal"])
def test_ctrl_c_during_join_exits_cleanly(heads, daemon):
    run = subprocess.run([sys.executable, "-c", _CTRL_C_DURING_JOIN, heads, daemon],
                         capture_output=True, text=True, timeout=300)
    assert "terminate called" not in run.stderr
    assert "KeyboardInterrupt" in run.stderr
    # A KeyboardInterrupt exits with SIGINT's status (or 0 when it arrived during the
    # interpreter's own shutdown, after a fit that finished first), never SIGABRT's.
    assert run.returncode in (-2, 0, 1, 130), f"exit code {run.returncode}: {run.stderr[-2000:]}"


# Ctrl-C during a long truncated SVD: the 3000 x 2000 case spends seconds in passes over A and
# in a dense eigensolve (the exact path); every step of it must stop within a second.
_CTRL_C_LATENCY = """
import signal, sys, time
import numpy as np
from metasp import kernels

signal.signal(signal.SIGINT, signal.default_int_handler)
A = np.random.default_rng(0).standard_normal((3000, 2000))
print("started", flush=True)
try:
    kernels.truncated_svd(A, 10, tol=1e-14)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("after", [1.0, 4.0])
def test_ctrl_c_stops_a_large_truncated_svd_within_a_second(after):
    import signal
    import time

    with subprocess.Popen([sys.executable, "-c", _CTRL_C_LATENCY], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        try:
            for line in process.stdout:  # an editable install may print while it imports
                if line.strip() == "started":
                    break
            time.sleep(after)
            process.send_signal(signal.SIGINT)
            sent = time.perf_counter()
            answer = process.stdout.readline().strip()
            latency = time.perf_counter() - sent
            _, errors = process.communicate(timeout=60)
        finally:
            process.kill()
    if answer == "finished":
        pytest.skip("the SVD finished before the signal (a fast machine)")
    assert answer == "interrupted", errors[-2000:]
    assert latency < 1.0


def test_task_statistics_checks_shapes_before_allocating():
    """An (s, d) subspace with s far above d asks for a (T, s, s) output: 19 GB here, from a
    640 KB argument. The binding refuses it before allocating anything."""
    import tracemalloc

    V = np.ones((D, 20000))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"V must have shape \(d, s\) with d = 4 and s >= 1"):
            statistics(V=V)
        with pytest.raises(ValueError, match=r"U must have shape \(d, s\) with d = 4"):
            _core.marginal_pass(X, Y, OFFSETS, V, 1.0, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20
