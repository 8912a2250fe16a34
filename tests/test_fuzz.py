"""Property-based fuzzing (Hypothesis) of metasp: public API, kernels and compiled core.

Targets
    The public API: ``metasp.fit`` with ``heads="auto"`` and ``heads="fixed"``,
    ``metasp.polish``, ``metasp.select_rank`` (small), the ``metasp.Tasks`` constructors,
    ``MetaSPResult.adapt`` and ``.predict``, ``metasp.baselines.*`` on tiny data; the validated
    kernels of ``metasp.kernels``; and the raw compiled entry points of ``metasp._core``, which
    validate nothing in Python, called with hostile arguments.

Inputs
    Random dtypes (float64, float32, float16, integers, bool, object, complex, big-endian,
    strings), memory layouts (C, Fortran, strided and reversed views, unaligned buffers,
    read-only arrays, nested lists), shapes (empty and tiny ones included), scales (zeros,
    1e-300 to 1e300, tasks of very different scales), NaN and inf, and option values (ranks
    out of range, huge and negative thread counts, edge tolerances and iteration caps, bad
    random states, wrong types).

Property, for every call
    It returns finite results (no NaN or inf in any returned array, the history included, but
    for the documented NaN of "step" and "beta" in the polish phase; the promised shapes;
    ``B`` with orthonormal rows where the status is "converged"), or it raises ``ValueError``
    or ``TypeError`` with a message (not NumPy's ``LinAlgError``, a ``ValueError`` that is no
    argument check). It never raises anything else, never warns with anything but metasp's own
    warning classes (``ConvergenceWarning``, ``DivergenceWarning``, ``DiagnosticWarning``;
    ``UserWarning`` from ``Tasks.from_frame``), never crashes and never hangs. The documented
    float64-range errors are accepted where the data make them possible: ``FloatingPointError``
    (fit, polish, the head prior: data beyond 1e100 or below 1e-100; kernels: entries from
    1e40 on; adapt and predict, where a head or a prediction is beyond float64) and
    ``OverflowError`` (``truncated_svd`` of an A whose norm is beyond float64).
    The raw ``_core`` entry points must not crash, raise only ``ValueError`` or ``TypeError``,
    and return finite arrays whenever their arguments hold finite values of ordinary size (NaN
    in, NaN out is allowed there: they are private).

Regressions
    The ``test_*`` functions at the end pin the minimal inputs of violations this suite once
    found, each fixed at its root. A new finding gets the same treatment: a minimal input as a
    test, then the fix.

How it runs
    Every target runs its Hypothesis examples in a fresh interpreter (this file run as a
    script), so a segfault, an abort or a hang fails the test, naming the last example, instead
    of killing pytest. Each example is also bounded by an alarm (SIGALRM; the compiled solvers
    poll for signals), which reports a hang as a failure. Every example is a plain dict of
    literals (a "spec"), printed on failure, and replayable on its own.

Commands
    The normal run (fixed seed, bounded examples, well under a minute on 2 cores)::

        OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive python -m pytest tests/test_fuzz.py -q

    A long randomized run (25 times the examples, a new seed every time)::

        METASP_FUZZ_PROFILE=long OMP_NUM_THREADS=2 python -m pytest tests/test_fuzz.py -q

    One target in the foreground, one example replayed (the spec a failure printed), and the
    outcomes of a target's calls counted (by exception message with METASP_FUZZ_DETAIL=1)::

        python tests/test_fuzz.py fit_fixed
        python tests/test_fuzz.py fit_fixed --spec "{'data': ..., 'options': ...}"
        METASP_FUZZ_DETAIL=1 python tests/test_fuzz.py --worker fit_fixed | grep @@outcomes
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import metasp
from metasp import _core, baselines, kernels

# -------------------------------------------------------------------------------------------
# Settings profiles
# -------------------------------------------------------------------------------------------

PROFILE_VARIABLE = "METASP_FUZZ_PROFILE"
_COMMON = dict(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
# The normal run: derandomized (the same examples every run), 100 "units" of examples; every
# target takes its own share of them (its weight, in percent of max_examples).
settings.register_profile("metasp-fuzz", max_examples=100, derandomize=True, **_COMMON)
# The long run: randomized, 25 times as many examples.
settings.register_profile("long", max_examples=2500, derandomize=False, **_COMMON)
PROFILE = os.environ.get(PROFILE_VARIABLE, "metasp-fuzz")
BASE_SETTINGS = settings.get_profile(PROFILE)
# Seconds one example may run before it counts as a hang.
EXAMPLE_SECONDS = 30.0
# Seconds an example may run that asked for a huge iteration count on purpose (a documented
# long run, not a hang): past them it is left out.
LONG_EXAMPLE_SECONDS = 2.0
# Seconds for the whole subprocess run of all targets.
RUN_SECONDS = 600 if PROFILE != "long" else 6 * 3600


def _settings(weight: int) -> settings:
    examples = max(1, BASE_SETTINGS.max_examples * weight // 100)
    return settings(BASE_SETTINGS, max_examples=examples)


# -------------------------------------------------------------------------------------------
# The property
# -------------------------------------------------------------------------------------------

METASP_WARNINGS = (metasp.ConvergenceWarning, metasp.DivergenceWarning)
RESULT_STATUSES = {"converged", "max_iter", "stalled", "diverged"}
ORTHONORMAL_TOL = 1e-8


class ExampleTimeout(Exception):
    """An example ran over its time limit."""


# Outcomes of the guarded calls, by kind: printed by the worker after each target (with
# METASP_FUZZ_DETAIL=1, the exceptions by message too).
OUTCOMES: dict = {}
DETAIL = bool(os.environ.get("METASP_FUZZ_DETAIL"))


def _count(kind: str) -> None:
    OUTCOMES[kind] = OUTCOMES.get(kind, 0) + 1


class Raised:
    """A call that raised one of the accepted exceptions."""

    def __init__(self, error):
        self.error = error


def _on_alarm(signum, frame):
    raise ExampleTimeout("the example ran over its time limit")


@contextlib.contextmanager
def watchdog(seconds: float):
    """Raise ExampleTimeout in the main thread after ``seconds`` (where SIGALRM exists; the
    compiled solvers poll for signals while they run). Nests: an outer limit still holds."""
    if not hasattr(signal, "setitimer") or signal.getsignal(signal.SIGALRM) is not _on_alarm:
        yield
        return
    outer = signal.getitimer(signal.ITIMER_REAL)[0]
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        left = outer - (time.monotonic() - start) if outer else 0.0
        signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3) if outer else 0.0)


def guarded(call, accepted=(ValueError, TypeError), warning_classes=METASP_WARNINGS):
    """Run ``call``: its return value, or Raised for an accepted exception with a message.

    Any other exception propagates, and so does a warning of another class than
    ``warning_classes`` (or one without a message). NumPy's LinAlgError is a ValueError, but
    not an argument check: it fails as an internal error.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = call()
        except accepted as error:
            assert str(error).strip(), f"{type(error).__name__} raised without a message"
            assert not isinstance(error, np.linalg.LinAlgError), f"internal error: {error!r}"
            _count(type(error).__name__ + (f": {str(error)[:70]}" if DETAIL else ""))
            value = Raised(error)
        else:
            _count("returned")
    for warning in caught:
        assert issubclass(warning.category, warning_classes), (
            f"unexpected {warning.category.__name__}: {warning.message} "
            f"({warning.filename}:{warning.lineno})")
        assert str(warning.message).strip(), f"{warning.category.__name__} without a message"
    return value


def assert_finite(value, name: str) -> None:
    array = np.asarray(value)
    if array.dtype.kind in "biufc":
        assert np.isfinite(array).all(), f"{name} has NaN or inf: {array!r}"


def check_result(result, T: int, d: int, s: int | None) -> None:
    """A MetaSPResult as fit, polish and the baselines promise it."""
    assert isinstance(result, metasp.MetaSPResult), type(result)
    s = result.B.shape[0] if s is None else s
    assert result.B.shape == (s, d), ("B", result.B.shape, (s, d))
    assert result.W.shape == (T, s), ("W", result.W.shape, (T, s))
    assert result.Theta.shape == (T, d), ("Theta", result.Theta.shape, (T, d))
    assert np.shape(result.singular_values) == (s,), ("singular_values", result.singular_values)
    for name in ("B", "W", "Theta", "singular_values"):
        assert_finite(getattr(result, name), name)
    for name in ("head_mean", "head_cov", "noise_variance"):
        if getattr(result, name) is not None:
            assert_finite(getattr(result, name), name)
    polish = np.asarray(result.history.get("phase", ())) == "polish"
    for key, value in result.history.items():
        if key in ("step", "beta") and polish.any():  # NaN in the polish phase
            value = np.asarray(value)[~polish[:len(value)]]
        assert_finite(value, f"history[{key!r}]")
    assert result.status in RESULT_STATUSES, result.status
    if result.status == "converged":
        B = np.asarray(result.B, dtype=np.float64)
        error = np.abs(B @ B.T - np.eye(s)).max()
        assert error <= ORTHONORMAL_TOL, f"converged, but B B^T is off the identity by {error:.3g}"


# -------------------------------------------------------------------------------------------
# Choosing option values: mostly valid, a few hostile ones per example
# -------------------------------------------------------------------------------------------

def knob(valid, hostile=()) -> tuple:
    """The values of one option: (valid ones, hostile ones); the first valid one is where
    Hypothesis shrinks to, and repeats weight a value."""
    return tuple(valid), tuple(hostile)


@st.composite
def choose(draw, menus: dict, max_hostile: int = 2) -> dict:
    """One value per option of ``menus``: up to ``max_hostile`` options take a hostile value,
    the others a valid one, so that most examples get past the argument checks."""
    candidates = [name for name, (_, hostile_values) in menus.items() if hostile_values]
    # Half the examples have no hostile value at all, a quarter one, ...
    counts = [n for n in (0, 0, 0, 0, 1, 1, 2, 3) if n <= min(max_hostile, len(candidates))]
    count = draw(st.sampled_from(counts))
    spoiled = set(draw(st.lists(st.sampled_from(candidates), min_size=count, max_size=count,
                                unique=True))) if count else set()
    return {name: draw(st.sampled_from(hostile_values if name in spoiled else valid))
            for name, (valid, hostile_values) in menus.items()}


def evaluate(source: str, namespace: dict | None = None):
    """An option value from its source text (specs hold text, so that they print as literals)."""
    return eval(source, {"np": np, "float": float, **(namespace or {})})  # noqa: S307


# -------------------------------------------------------------------------------------------
# Hostile arrays
# -------------------------------------------------------------------------------------------

SCALES = (1.0,) * 6 + (0.0, 1e-300, 1e-160, 1e-20, 1e-5, 1e5, 1e20, 1e160, 1e300)
ARRAY_MENUS = {
    "dtype": knob(("float64",) * 8 + ("float32",) * 3 + (
        "float16", "int64", "int8", "uint8", "bool", "object", ">f8"), ("complex128", "<U4")),
    "layout": knob(("C",) * 4 + ("F", "strided", "reversed", "unaligned", "readonly", "list")),
    "scale": knob(SCALES),
    "bad": knob((None,), ("nan", "inf", "-inf", "None")),
}


def with_dtype(values: np.ndarray, dtype: str, bad=None):
    """``values`` (float64) converted to ``dtype``, however lossy."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kind = np.dtype(dtype).kind
        if kind in "fc":
            return values.astype(dtype)
        if kind in "iu":
            info = np.iinfo(dtype)
            clipped = np.clip(np.nan_to_num(np.round(values)), max(info.min, -2**62),
                              min(info.max, 2**62))
            return clipped.astype(dtype)
        if kind == "b":
            return values > 0
        if kind == "O":
            out = values.astype(object)
            if bad == "None" and out.size:
                out.flat[out.size // 2] = None
            return out
        return values.astype(dtype)  # strings


def with_layout(array: np.ndarray, layout: str):
    if layout == "list":
        return array.tolist()
    if array.ndim == 0 or array.size == 0 or layout == "C":
        return np.ascontiguousarray(array)
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided":
        big = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
        big[..., ::2] = array
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(array[::-1])[::-1]
    if layout == "unaligned":
        if array.dtype.hasobject or array.dtype.itemsize == 1:
            return array
        buffer = np.zeros(array.nbytes + 1, dtype=np.uint8)
        out = np.ndarray(array.shape, dtype=array.dtype, buffer=buffer, offset=1)
        out[...] = array
        return out
    if layout == "readonly":
        out = array.copy()
        out.flags.writeable = False
        return out
    raise AssertionError(layout)


def hostile(values: np.ndarray, spec: dict, seed: int):
    """``values`` (float64) scaled, spoiled, converted and laid out as ``spec`` says."""
    with np.errstate(all="ignore"):
        values = np.asarray(values, dtype=np.float64) * spec["scale"]
    if spec["bad"] is not None and values.size:
        values = values.copy()
        where = np.random.default_rng(seed).integers(values.size)
        values.flat[where] = {"nan": np.nan, "None": np.nan, "inf": np.inf,
                              "-inf": -np.inf}[spec["bad"]]
    return with_layout(with_dtype(values, spec["dtype"], spec["bad"]), spec["layout"])


def is_extreme(*scales) -> bool:
    """Whether data of these scales may leave the float64 range in a documented way."""
    return any(scale != 0 and abs(math.log10(scale)) >= 100 for scale in scales)


def max_magnitude(*arrays) -> float:
    """The largest finite |entry| among ``arrays`` (those that read as real numbers)."""
    largest = 0.0
    for array in arrays:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                values = np.abs(np.asarray(array, dtype=np.float64))
            except (TypeError, ValueError):
                continue
            finite = values[np.isfinite(values)]
        if finite.size:
            largest = max(largest, float(finite.max()))
    return largest


def min_magnitude(*arrays) -> float:
    """The smallest non-zero finite |entry| among ``arrays`` (0.0 where there is none)."""
    smallest = np.inf
    for array in arrays:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                values = np.abs(np.asarray(array, dtype=np.float64))
            except (TypeError, ValueError):
                continue
            values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            smallest = min(smallest, float(values.min()))
    return 0.0 if smallest == np.inf else smallest


# -------------------------------------------------------------------------------------------
# Task data
# -------------------------------------------------------------------------------------------

FORMS = ("list", "array", "tasks", "groups")
TASK_SCALES = (1.0,) * 3 + (0.0, 1e-10, 1e-100, 1e-250, 1e100)
DATA_MENUS = {
    **{f"x_{name}": menu for name, menu in ARRAY_MENUS.items()},
    **{f"y_{name}": menu for name, menu in ARRAY_MENUS.items()},
    "y_shape": knob(("ok",), ("short", "column")),
    "ragged": knob((False,), (True,)),
    "empty": knob((None,), ("task", "features")),
    "mixed_scales": knob((False,) * 3 + (True,)),
    "noise": knob((0.1, 0.0, 1.0)),
    "rank": knob((1, 2, 3)),
}


@st.composite
def task_data(draw, forms=FORMS, max_tasks=5, max_m=6, max_d=5, max_hostile=1):
    """A spec of T regression tasks in one of the input forms metasp accepts."""
    knobs = draw(choose(DATA_MENUS, max_hostile))
    form = draw(st.sampled_from(forms))
    if draw(st.sampled_from((False,) * 9 + (True,))):  # now and then a larger problem
        max_tasks, max_m, max_d = 40, 20, 12
    T, d = draw(st.integers(1, max_tasks)), draw(st.integers(1, max_d))
    sizes = ((draw(st.integers(1, max_m)),) * T if form == "array"
             else tuple(draw(st.lists(st.integers(1, max_m), min_size=T, max_size=T))))
    if knobs["empty"] == "task":
        sizes = (0,) * T if form == "array" else sizes[:-1] + (0,)
    elif knobs["empty"] == "features":
        d = 0
    return {
        "form": form, "sizes": sizes, "d": d, "seed": draw(st.integers(0, 2**32 - 1)),
        "rank": knobs["rank"], "noise": knobs["noise"],
        "x": {name: knobs[f"x_{name}"] for name in ARRAY_MENUS},
        "y": {name: knobs[f"y_{name}"] for name in ARRAY_MENUS},
        "task_scales": tuple(draw(st.lists(st.sampled_from(TASK_SCALES), min_size=T,
                                           max_size=T))) if knobs["mixed_scales"] else None,
        "y_shape": knobs["y_shape"],
        "ragged": knobs["ragged"] and form == "list" and len(sizes) > 1,
    }


def task_values(data: dict):
    """Per-task float64 (X_t, y_t) of a planted rank-r model, and its (r, d) subspace."""
    rng = np.random.default_rng(data["seed"])
    sizes, d = data["sizes"], data["d"]
    r = min(data["rank"], d)
    B = np.linalg.qr(rng.standard_normal((d, r)))[0].T if r else np.zeros((0, d))
    W = rng.standard_normal((len(sizes), r))
    Xs, ys = [], []
    for t, m in enumerate(sizes):
        X = rng.standard_normal((m, d))
        y = X @ (W[t] @ B) + data["noise"] * rng.standard_normal(m)
        scale = 1.0 if data["task_scales"] is None else data["task_scales"][t]
        Xs.append(X * scale)
        ys.append(y * scale)
    return Xs, ys, B


def data_scales(data: dict) -> tuple:
    return (data["x"]["scale"], data["y"]["scale"], *(data["task_scales"] or ()))


def task_input(data: dict):
    """``(Xs, ys)`` as metasp.fit takes them. For the forms built by a Tasks constructor, the
    constructor runs here: call it where its exceptions are accepted."""
    Xs, ys, _ = task_values(data)
    seed, x, y, shape = data["seed"], data["x"], data["y"], data["y_shape"]
    if data["ragged"]:
        Xs[-1] = np.hstack([Xs[-1], np.ones((Xs[-1].shape[0], 1))])
    if data["form"] == "list":
        if shape == "short":
            ys[-1] = ys[-1][:-1]
        elif shape == "column":
            ys = [v[:, None] for v in ys]
        return ([hostile(X, x, seed + t) for t, X in enumerate(Xs)],
                [hostile(v, y, seed - t) for t, v in enumerate(ys)])
    if data["form"] == "array":
        X3, y2 = np.stack(Xs), np.stack(ys)
        if shape == "short":
            y2 = y2[:, :-1]
        elif shape == "column":
            y2 = y2[..., None]
        return hostile(X3, x, seed), hostile(y2, y, seed + 1)
    X2, y1 = np.concatenate(Xs), np.concatenate(ys)
    if shape == "short":
        y1 = y1[:-1]
    elif shape == "column":
        y1 = y1[:, None]
    X2, y1 = hostile(X2, x, seed), hostile(y1, y, seed + 1)
    sizes = np.asarray(data["sizes"])
    if data["form"] == "tasks":
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        return metasp.Tasks(X2, y1, offsets), None
    groups = np.repeat(np.arange(len(sizes)) * 7 % 101, sizes)  # distinct, not in order
    return metasp.Tasks.from_groups(X2, y1, groups), None


# -------------------------------------------------------------------------------------------
# Shared option menus (source text)
# -------------------------------------------------------------------------------------------

N_JOBS = knob(("None",) * 3 + ("1", "2", "-1", "-2", "-(10**9)", "10**6", "2**31 - 1", "2**31",
                                "2**63", "10**30", "np.int64(2)", "np.uint64(2**64 - 1)"),
              ("0", "1.5", "'2'", "True"))
TOL = knob(("1e-10",) * 3 + ("1e-6", "0.5", "0", "1e-300", "1e300", "np.float32(1e-3)"),
           ("float('inf')", "float('nan')", "-1", "'x'", "None", "True"))
MAX_ITER = knob(("5", "5", "1", "2", "20", "np.int64(3)", "2**31", "2**63", "10**30"),
                ("0", "-1", "1.5", "None", "True", "'3'"))
HUGE_MAX_ITER = ("2**31", "2**63", "10**30")
# None (fresh entropy) only in the long run: the normal run is to be the same every time.
RANDOM_STATE = knob(("0", "1", "2**32", "2**63", "10**30", "[1, 2]",
                     "np.random.default_rng(0)", "np.random.RandomState(0)",
                     "np.random.SeedSequence(0)") + (("None",) if PROFILE == "long" else ()),
                    ("-1", "1.5", "'seed'", "True", "np.int64(-5)"))
RANK = knob(("1",) * 4 + ("2", "3", "np.int64(1)"),
            ("0", "-1", "None", "2.0", "True", "'2'", "2**63", "10**30", "[1]"))
# Subspaces of shape (s, d), built per example (see subspaces()).
SUBSPACE = knob(("B_good",) * 3 + ("B_fortran", "B_int", "B_huge", "B_tiny"),
                ("B_wide", "B_tall", "B_rankdef", "B_nan", "B_inf", "B_complex", "B_1d",
                 "B_empty", "B_object", "None", "'x'"))


def iteration_knobs(knobs: dict) -> dict:
    """A huge max_iter comes with options that let the run stop: tol > 0 (tol=0 runs max_iter
    iterations, as documented), and for fixed heads the adaptive step with the polish, whose
    stall test ends it. Hard thresholding alone (a fixed step, or polish=None) may crawl on
    an underdetermined problem, its loss still falling by a little every iteration, for all
    of a max_iter of 2^31: asked for, not a hang."""
    if knobs.get("max_iter") in HUGE_MAX_ITER:
        knobs["tol"] = "1e-6"
        for name, value in (("step", "'auto'"), ("polish", "'auto'")):
            if name in knobs:
                knobs[name] = value
    return knobs


def subspaces(d: int, s, seed: int) -> dict:
    """The (s, d) subspaces SUBSPACE names, for rank ``s`` (1 where it is not a valid int)."""
    s = s if isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 1 <= s <= max(
        d, 1) else 1
    rng = np.random.default_rng(seed)
    good = rng.standard_normal((s, d))
    rankdef = np.repeat(good[:1], s, axis=0) if s > 1 else np.zeros((1, d))
    with np.errstate(all="ignore"):
        return {
            "B_good": good, "B_wide": rng.standard_normal((s, d + 1)),
            "B_tall": rng.standard_normal((s + 1, d)), "B_rankdef": rankdef,
            "B_nan": np.where(np.eye(s, d) > 0, np.nan, good),
            "B_inf": np.where(np.eye(s, d) > 0, np.inf, good), "B_huge": good * 1e300,
            "B_tiny": good * 1e-300, "B_int": np.round(good * 3).astype(np.int64) + np.eye(
                s, d, dtype=np.int64),
            "B_complex": good + 1j, "B_object": good.astype(object),
            "B_1d": good.ravel(), "B_empty": np.zeros((0, d)),
            "B_fortran": np.asfortranarray(good),
        }


def _expected_shapes(data: dict) -> tuple:
    """(T, d) of a fit that accepted ``data`` (from_groups makes no task of an empty one)."""
    sizes = [m for m in data["sizes"] if m or data["form"] != "groups"]
    return len(sizes), data["d"]


def _accepted_float_errors(*scales) -> tuple:
    """FloatingPointError where the documented float64-range error is possible."""
    return (ValueError, TypeError, FloatingPointError) if is_extreme(*scales) else (
        ValueError, TypeError)


# -------------------------------------------------------------------------------------------
# Targets: the public API
# -------------------------------------------------------------------------------------------

FIT_MENUS = {
    "s": RANK, "max_iter": MAX_ITER, "tol": TOL, "n_jobs": N_JOBS,
    "random_state": RANDOM_STATE,
    "init": knob(("'zero'",) * 3 + ("'spectral'", "B_good", "B_fortran", "B_int", "B_huge",
                                     "B_tiny"),
                 ("B_rankdef", "B_nan", "B_tall", "B_wide", "'bad'", "None", "B_complex",
                  "B_1d", "B_empty")),
    "reference_B": knob(("None",) * 4 + ("B_good",), ("B_nan", "B_wide", "B_rankdef")),
    "sin_tol": knob(("None",) * 4 + ("0.1",), ("0", "1", "float('nan')", "'x'")),
}
FIXED_MENUS = {
    "heads": knob(("'fixed'",)),
    "step": knob(("'auto'",) * 3 + ("1.0", "0.5", "1e-300", "1e300"),
                 ("0", "-1", "float('nan')", "float('inf')", "'big'", "None", "True")),
    "accel": knob(("'cg'", "'cg'", "None"), ("'x'", "1")),
    "polish": knob(("'auto'", "'auto'", "'als'", "None"), ("'x'", "True")),
    "n_starts": knob(("1", "1", "2", "3"), ("0", "1001", "2.0", "None")),
}
AUTO_MENUS = {"heads": knob(("'auto'",) * 3 + ("'random'",), ("'bogus'", "None", "'fixed '"))}


@st.composite
def fit_specs(draw, heads: str):
    menus = {**FIT_MENUS, **(FIXED_MENUS if heads == "fixed" else AUTO_MENUS)}
    return {"data": draw(task_data()), "options": iteration_knobs(draw(choose(menus)))}


def check_fit(spec: dict) -> None:
    data, options = spec["data"], spec["options"]
    s = evaluate(options["s"])
    names = subspaces(data["d"], s, data["seed"] + 2)
    kwargs = {key: evaluate(value, names) for key, value in options.items() if key != "s"}
    outcome = guarded(lambda: metasp.fit(*task_input(data), s, **kwargs),
                      accepted=_accepted_float_errors(*data_scales(data)))
    if not isinstance(outcome, Raised):
        check_result(outcome, *_expected_shapes(data), int(s))


POLISH_MENUS = {
    "B": SUBSPACE, "s": knob(("1", "1", "2", "3")), "max_iter": MAX_ITER, "tol": TOL,
    "n_jobs": N_JOBS, "reference_B": knob(("None",) * 4 + ("B_good",), ("B_tall", "B_nan")),
}


@st.composite
def polish_specs(draw):
    return {"data": draw(task_data()), "options": iteration_knobs(draw(choose(POLISH_MENUS)))}


def check_polish(spec: dict) -> None:
    data, options = spec["data"], dict(spec["options"])
    names = subspaces(data["d"], evaluate(options.pop("s")), data["seed"] + 3)
    kwargs = {key: evaluate(value, names) for key, value in options.items()}
    outcome = guarded(lambda: metasp.polish(*task_input(data), **kwargs),
                      accepted=_accepted_float_errors(*data_scales(data)))
    if not isinstance(outcome, Raised):
        check_result(outcome, *_expected_shapes(data), None)


SELECT_RANK_MENUS = {
    "ranks": knob(("(1,)", "(1, 2)", "[2, 1]", "range(1, 3)"),
                  ("(0,)", "()", "(1, 99)", "'a'", "None", "(1.0,)")),
    "cv": knob(("2", "2", "3"), ("1", "0", "2.0", "None")),
    "holdout": knob(("'samples'", "'samples'", "'tasks'"), ("'x'",)),
    "heads": knob(("'posterior'", "'posterior'", "'fitted'"), ("'x'",)),
    "rule": knob(("'1se'", "'min'"), ("'x'",)),
    "shots": knob(("(1, 2)", "(2,)"), ("(0,)", "()", "'x'", "(10**9,)")),
    "random_state": knob(RANDOM_STATE[0][:4], RANDOM_STATE[1]),
    "max_iter": knob(("5", "20")), "n_jobs": knob(N_JOBS[0][:6], N_JOBS[1]),
}


@st.composite
def select_rank_specs(draw):
    return {"data": draw(task_data(forms=("array", "list", "tasks"), max_tasks=6, max_m=8)),
            "options": draw(choose(SELECT_RANK_MENUS))}


def check_select_rank(spec: dict) -> None:
    data = spec["data"]
    kwargs = {key: evaluate(value) for key, value in spec["options"].items()}
    outcome = guarded(lambda: metasp.select_rank(*task_input(data), **kwargs),
                      accepted=_accepted_float_errors(*data_scales(data)))
    if isinstance(outcome, Raised):
        return
    assert isinstance(outcome, metasp.RankSelection)
    assert outcome.best_rank in set(outcome.ranks.tolist())
    for name in ("mean_mse", "std_mse"):
        assert_finite(getattr(outcome, name), name)


OFFSET_VARIANTS = ("empty_task", "past_end", "negative", "decreasing", "single", "none",
                   "float", "2d", "huge", "start_1", "object")


def bad_offsets(offsets: np.ndarray, variant: str):
    """Task boundaries ``offsets`` spoiled as ``variant`` says ("ok": as they are)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    changed = offsets.copy()
    if variant == "empty_task":
        changed[1] = changed[0]
    elif variant == "past_end":
        changed[-1] += 10
    elif variant == "negative":
        changed[1:] = -changed[1:] - 1
    elif variant == "decreasing":
        changed = changed[::-1].copy()
    elif variant == "single":
        changed = changed[:1]
    elif variant == "none":
        changed = changed[:0]
    elif variant == "float":
        changed = changed.astype(np.float64)
    elif variant == "int32":
        changed = changed.astype(np.int32)
    elif variant == "uint64":
        changed = changed.astype(np.uint64)
    elif variant == "2d":
        changed = changed[:, None]
    elif variant == "huge":
        changed[-1] = 2**62
    elif variant == "start_1":
        changed[0] = 1
    elif variant == "object":
        changed = changed.astype(object)
    return changed


TASKS_MENUS = {
    "constructor": knob(("init", "init", "from_list", "from_array", "from_groups",
                         "from_frame")),
    "offsets": knob(("ok",) * 4 + ("int32", "uint64"), OFFSET_VARIANTS),
    "dtype": knob(("None",) * 4 + ("np.float32", "np.float64", "'float32'"),
                  ("np.int64", "'x'", "np.complex64")),
    "labels": knob(("None", "None", "'ok'"), ("'short'",)),
    "feature_names": knob(("None", "None", "'ok'"), ("'short'",)),
    "groups": knob(("'sorted'", "'sorted'", "'shuffled'", "'strings'"),
                   ("'nan'", "'mixed'", "'short'")),
    "dropna": knob(("False", "False", "True"), ("'yes'",)),
    "min_samples": knob(("1", "1", "2"), ("0", "1.5")),
}


@st.composite
def tasks_specs(draw):
    return {"data": draw(task_data(forms=("tasks",))), "options": draw(choose(TASKS_MENUS, 1))}


def _groups(sizes, variant: str, seed: int):
    groups = np.repeat(np.arange(len(sizes)), sizes)
    if variant in ("nan", "mixed"):
        groups = groups.astype(object)
    if variant == "shuffled":
        groups = np.random.default_rng(seed).permutation(groups)
    elif variant == "nan" and groups.size:
        groups[0] = np.nan
    elif variant == "mixed" and groups.size:
        groups[-1] = "a"
    elif variant == "short":
        groups = groups[:-1]
    elif variant == "strings":
        groups = np.array([f"task {g}" for g in groups])
    return groups


def _frame(X, y, groups):
    """A long-format DataFrame: feature columns x0, x1, ..., "group" and "target"."""
    import pandas as pd

    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or not X.shape[0] == y.shape[0] == len(groups):
        reject()  # no such frame: pandas refuses columns of different lengths itself
    columns = {f"x{j}": X[:, j] for j in range(X.shape[1])}
    return pd.DataFrame({"group": groups, "target": y, **columns})


def check_tasks(spec: dict) -> None:
    data, options = spec["data"], spec["options"]
    Xs, ys, _ = task_values(data)
    sizes, d, seed = data["sizes"], data["d"], data["seed"]
    kind = options["constructor"]
    dtype = evaluate(options["dtype"])
    X2, y1 = np.concatenate(Xs), np.concatenate(ys)
    offsets = bad_offsets(np.concatenate([[0], np.cumsum(sizes)]), options["offsets"])
    labels = {"None": None, "'ok'": np.arange(len(sizes)),
              "'short'": np.arange(len(sizes) - 1)}[options["labels"]]
    feature_names = {"None": None, "'ok'": [f"f{j}" for j in range(d)],
                     "'short'": [f"f{j}" for j in range(d + 1)]}[options["feature_names"]]
    groups = _groups(sizes, evaluate(options["groups"]), seed)
    x, y = data["x"], data["y"]
    warning_classes = METASP_WARNINGS

    def construct():
        if kind == "init":
            return metasp.Tasks(hostile(X2, x, seed), hostile(y1, y, seed + 1), offsets,
                                labels=labels, feature_names=feature_names, dtype=dtype)
        if kind == "from_list":
            return metasp.Tasks.from_list([hostile(X, x, seed + t) for t, X in enumerate(Xs)],
                                          [hostile(v, y, seed - t) for t, v in enumerate(ys)],
                                          dtype=dtype)
        if kind == "from_array":
            equal = min(sizes)
            return metasp.Tasks.from_array(
                hostile(np.stack([X[:equal] for X in Xs]), x, seed),
                hostile(np.stack([v[:equal] for v in ys]), y, seed + 1), dtype=dtype)
        if kind == "from_groups":
            return metasp.Tasks.from_groups(hostile(X2, x, seed), hostile(y1, y, seed + 1),
                                            groups, dtype=dtype)
        df = _frame(hostile(X2, x, seed), hostile(y1, y, seed + 1), groups)
        return metasp.Tasks.from_frame(df, "group", "target", dtype=dtype,
                                       dropna=evaluate(options["dropna"]),
                                       min_samples=evaluate(options["min_samples"]))

    if kind == "from_frame":
        # from_frame reports the columns and rows it leaves out with a UserWarning.
        warning_classes = METASP_WARNINGS + (UserWarning,)
        try:
            import pandas  # noqa: F401
        except ImportError:
            reject()
    outcome = guarded(construct, warning_classes=warning_classes)
    if isinstance(outcome, Raised):
        return
    tasks = outcome
    assert isinstance(tasks, metasp.Tasks)
    assert tasks.X.ndim == 2 and tasks.X.flags.c_contiguous and tasks.X.dtype in (
        np.float32, np.float64), (tasks.X.dtype, tasks.X.flags)
    assert tasks.y.dtype == np.float64 and tasks.y.shape == (tasks.X.shape[0],)
    assert tasks.offsets.dtype == np.int64 and tasks.offsets[0] == 0
    assert tasks.offsets[-1] == tasks.X.shape[0] and (np.diff(tasks.offsets) > 0).all()
    assert tasks.X.shape[1] >= 1
    assert_finite(tasks.X, "X")
    assert_finite(tasks.y, "y")
    if dtype is not None:
        assert tasks.X.dtype == dtype


MODEL_SCALES = (1.0, 1.0, 1e-300, 1e-100, 1e100, 1e300)
ADAPT_MENUS = {
    "m": knob((3, 3, 1, 2, 10), (0,)),
    "columns": knob(("ok",), ("more", "fewer", "1d")),
    **{f"x_{name}": menu for name, menu in ARRAY_MENUS.items()},
    **{f"y_{name}": menu for name, menu in ARRAY_MENUS.items()},
    "prior": knob(("None", "None", "'empirical'", "'ridge'", "'none'"), ("'x'", "1")),
    "ridge": knob(("None",) * 3 + ("0", "1.0", "1e-300", "1e300"),
                  ("-1", "float('nan')", "float('inf')", "'1'", "True")),
    "w": knob(("adapted",) * 3 + ("W0", "list", "object"), ("nan", "short", "complex")),
}


@st.composite
def adapt_specs(draw):
    T, d = draw(st.integers(2, 8)), draw(st.integers(1, 5))
    model = {
        "seed": draw(st.integers(0, 2**16)), "T": T, "m": draw(st.integers(2, 8)), "d": d,
        "s": draw(st.integers(1, min(T, d))), "x_scale": draw(st.sampled_from(MODEL_SCALES)),
        "y_scale": draw(st.sampled_from(MODEL_SCALES + (0.0,))),
        "solver": draw(st.sampled_from(("auto", "fixed", "mom"))),
    }
    knobs = draw(choose(ADAPT_MENUS))
    options = {key: value for key, value in knobs.items() if not key.startswith(("x_", "y_"))}
    options["x"] = {name: knobs[f"x_{name}"] for name in ARRAY_MENUS}
    options["y"] = {name: knobs[f"y_{name}"] for name in ARRAY_MENUS}
    return {"model": model, "options": options}


_MODELS: dict = {}


def fitted_model(model: dict):
    """A MetaSPResult for the adapt/predict target (cached), or None where the fit fails."""
    key = tuple(sorted(model.items()))
    if key not in _MODELS:
        X, y, _, _ = metasp.datasets.make_hps(T=model["T"], m=model["m"], d=model["d"],
                                              s=model["s"], sigma=0.1,
                                              random_state=model["seed"])
        X, y = X * model["x_scale"], y * model["y_scale"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if model["solver"] == "mom":
                    result = baselines.mom(X, y, model["s"])
                else:
                    result = metasp.fit(X, y, model["s"], heads=model["solver"], max_iter=50,
                                        random_state=0)
            except (ValueError, TypeError, FloatingPointError):
                result = None
        _MODELS[key] = result
    return _MODELS[key]


def check_adapt_predict(spec: dict) -> None:
    model, options = spec["model"], spec["options"]
    result = fitted_model(model)
    if result is None:
        reject()
    d, s, seed = model["d"], model["s"], model["seed"]
    rng = np.random.default_rng(seed + 5)
    columns = {"ok": d, "more": d + 1, "fewer": d - 1, "1d": d}[options["columns"]]
    unit = rng.standard_normal((options["m"], columns))
    theta = rng.standard_normal(min(d, columns))
    y = unit[:, :theta.size] @ theta * model["y_scale"]
    X = unit * model["x_scale"]
    if options["columns"] == "1d":
        X = X.ravel()
    X, y = hostile(X, options["x"], seed), hostile(y, options["y"], seed + 1)
    prior, ridge = evaluate(options["prior"]), evaluate(options["ridge"])
    scales = (model["x_scale"], model["y_scale"], options["x"]["scale"], options["y"]["scale"])
    # A head or prediction beyond float64 is a FloatingPointError, never inf.
    accepted = _accepted_float_errors(*scales) + (FloatingPointError,)
    w = guarded(lambda: result.adapt(X, y, prior=prior, ridge=ridge), accepted=accepted)
    if not isinstance(w, Raised):
        assert np.shape(w) == (s,), np.shape(w)
        assert_finite(w, "adapt's head")
    w_in = {"adapted": w if not isinstance(w, Raised) else result.W[0], "W0": result.W[0],
            "nan": np.full(s, np.nan), "short": np.zeros(s + 1),
            "object": result.W[0].astype(object), "complex": result.W[0] + 1j,
            "list": result.W[0].tolist()}[options["w"]]
    prediction = guarded(lambda: result.predict(X, w_in), accepted=accepted)
    if not isinstance(prediction, Raised):
        assert np.shape(prediction) == (np.shape(X)[0],)
        assert_finite(prediction, "predict's output")


RS, NJ = knob(RANDOM_STATE[0][:6], RANDOM_STATE[1]), knob(N_JOBS[0][:10], N_JOBS[1])
SMALL_TOL = knob(TOL[0][:6], TOL[1])
BASELINE_MENUS = {
    "mom": {},
    "oracle": {"B_true": SUBSPACE},
    "single_task": {"ridge": knob(("0.0", "1.0", "1e-300", "1e300"), ("-1", "float('nan')",
                                                                      "'x'")),
                    "random_state": RS, "n_jobs": NJ},
    "altmin": {"init": knob(("'spectral'", "'random'"), ("'x'",)),
               "max_iter": knob(("3", "1"), ("0", "1.5")), "tol": SMALL_TOL,
               "cg_steps": knob(("5", "1"), ("0", "-1")), "random_state": RS, "n_jobs": NJ},
    "altmin_gd": {"init": knob(("'spectral'", "'random'"), ("'x'",)),
                  "max_iter": knob(("3", "1"), ("0",)), "tol": SMALL_TOL, "random_state": RS,
                  "n_jobs": NJ},
    "anil": {"order": knob(("1", "2"), ("3", "0")),
             "inner_lr": knob(("0.1", "1e300", "1e-300"), ("0", "-1", "float('nan')")),
             "inner_steps": knob(("1", "3"), ("0",)),
             "outer_lr": knob(("0.1", "1e300"), ("0",)), "max_iter": knob(("3", "1"), ("0",)),
             "support_fraction": knob(("0.5", "0.99"), ("0", "1")), "tol": SMALL_TOL,
             "random_state": RS, "n_jobs": NJ},
    "burer_monteiro": {"solver": knob(("'auto'", "'gd'", "'lbfgs'"), ("'x'",)),
                       "init": knob(("'spectral'", "'random'"), ("'x'",)),
                       "max_iter": knob(("3", "1"), ("0",)), "tol": SMALL_TOL,
                       "random_state": RS, "n_jobs": NJ},
    "nuclear_norm": {"lam": knob(("'default'", "0.1", "'search'", "0"),
                                 ("-1", "float('nan')", "'x'")),
                     "sigma": knob(("None", "0.1", "0"), ("-1", "float('nan')")),
                     "max_iter": knob(("5", "1"), ("0",)), "tol": SMALL_TOL,
                     "validation_fraction": knob(("0.2", "0.5"), ("0", "1")),
                     "random_state": RS, "n_jobs": NJ},
    "noise_level": {"random_state": RS},
}


@st.composite
def baseline_specs(draw):
    method = draw(st.sampled_from(tuple(BASELINE_MENUS)))
    menus = {"s": RANK, **BASELINE_MENUS[method]}
    return {"method": method, "data": draw(task_data(max_tasks=5, max_m=6, max_d=4)),
            "options": draw(choose(menus))}


def check_baseline(spec: dict) -> None:
    data, method, options = spec["data"], spec["method"], dict(spec["options"])
    s = evaluate(options.pop("s"))
    names = subspaces(data["d"], s, data["seed"] + 4)
    kwargs = {key: evaluate(value, names) for key, value in options.items()}
    function = getattr(baselines, method)
    accepted = _accepted_float_errors(*data_scales(data))
    outcome = guarded(lambda: function(*task_input(data), s, **kwargs), accepted=accepted)
    if isinstance(outcome, Raised):
        return
    if method == "noise_level":
        assert isinstance(outcome, float) and math.isfinite(outcome) and outcome >= 0, outcome
        return
    check_result(outcome, *_expected_shapes(data), int(s))


# -------------------------------------------------------------------------------------------
# Targets: metasp.kernels
# -------------------------------------------------------------------------------------------

# Variants of an array argument. "Structural" ones keep the values (finite, ordinary size)
# and change the container: layout, dtype, shape.
LAYOUT_VARIANTS = ("ok",) * 8 + ("f_order", "strided", "reversed", "unaligned", "readonly",
                                 "float32", "float16", "int64", "bool", "object", "big_endian",
                                 "list")
SHAPE_VARIANTS = ("extra_row", "missing_row", "extra_col", "missing_col", "transposed", "flat",
                  "3d", "empty", "zero_rows", "none", "scalar", "string", "complex")
STRUCTURAL = LAYOUT_VARIANTS + SHAPE_VARIANTS
VALUE_VARIANTS = ("nan", "inf", "-inf", "huge", "tiny", "zeros", "max", "subnormal")
ARRAY_VARIANT = knob(LAYOUT_VARIANTS + ("tiny", "zeros", "subnormal", "huge"),
                     SHAPE_VARIANTS + ("nan", "inf", "-inf", "max"))


def vary(valid: np.ndarray, variant: str):
    """``valid`` (a float64 array) changed as ``variant`` says."""
    a = np.asarray(valid, dtype=np.float64)
    with np.errstate(all="ignore"):
        if variant in ("extra_col", "missing_col"):
            if a.ndim < 2:
                return np.append(a, 1.0) if variant == "extra_col" else a[:-1]
            if variant == "missing_col":
                return np.ascontiguousarray(a[:, :-1])
            return np.concatenate([a, np.ones((a.shape[0], 1) + a.shape[2:])], axis=1)
        if variant in ("nan", "inf", "-inf"):
            out = a.copy()
            if out.size:
                out.flat[out.size // 2] = float(variant)
            return out
        if variant == "extra_row":
            return np.concatenate([a, a[:1] if len(a) else np.zeros((1,) + a.shape[1:])])
        return {
            "ok": lambda: a, "f_order": lambda: np.asfortranarray(a),
            "strided": lambda: with_layout(a, "strided"),
            "reversed": lambda: with_layout(a, "reversed"),
            "unaligned": lambda: with_layout(a, "unaligned"),
            "readonly": lambda: with_layout(a, "readonly"),
            "float32": lambda: a.astype(np.float32), "float16": lambda: a.astype(np.float16),
            "int64": lambda: np.round(a).astype(np.int64), "bool": lambda: a > 0,
            "object": lambda: a.astype(object), "big_endian": lambda: a.astype(">f8"),
            "list": lambda: a.tolist(), "complex": lambda: a + 0j,
            "missing_row": lambda: a[:-1], "transposed": lambda: np.ascontiguousarray(a.T),
            "flat": lambda: a.ravel(), "3d": lambda: a[None],
            "empty": lambda: np.zeros((0,) * max(a.ndim, 1)), "zero_rows": lambda: a[:0],
            "none": lambda: None, "scalar": lambda: 1.0, "string": lambda: "x",
            "huge": lambda: a * 1e300 + 1e300, "tiny": lambda: a * 1e-300,
            "zeros": lambda: np.zeros_like(a),
            "max": lambda: np.full_like(a, np.finfo(float).max),
            "subnormal": lambda: np.full_like(a, 5e-324),
        }[variant]()


KERNEL_ARGUMENTS = {
    "gradient": ("Theta", "subspace"), "curvature": ("C", "B"),
    "task_statistics": ("B", "heads"), "marginal_pass": ("U", "noise"),
    "truncated_svd": ("A", "warm_start", "tol", "max_steps", "random_state"),
}
KERNEL_MENUS = {
    "noise": knob(("0.5", "0.5", "1e-300", "1e300", "5e-324", "np.float32(2)"),
                  ("0", "-1", "float('nan')", "float('inf')", "'x'", "None", "True")),
    "tol": TOL, "max_steps": knob(("50", "300", "1", "2**31"), ("0", "-1", "1.5")),
    "random_state": RANDOM_STATE, "s": RANK, "n_jobs": N_JOBS,
    "tasks": knob(("Tasks",), ("tuple", "None", "array")),
    "optional": knob(("given", "given", "omitted")),
}


@st.composite
def kernel_specs(draw):
    kernel = draw(st.sampled_from(tuple(KERNEL_ARGUMENTS)))
    data = draw(task_data(forms=("tasks",), max_tasks=6, max_d=5, max_hostile=0))
    data["x"]["dtype"] = draw(st.sampled_from(("float64", "float64", "float32")))
    menus = {name: KERNEL_MENUS.get(name, ARRAY_VARIANT) for name in KERNEL_ARGUMENTS[kernel]}
    menus.update({name: KERNEL_MENUS[name] for name in ("s", "n_jobs", "tasks", "optional")})
    return {"kernel": kernel, "data": data, "rank": draw(st.integers(1, 3)),
            "options": draw(choose(menus))}


def check_kernel(spec: dict) -> None:
    data, options, kernel = spec["data"], spec["options"], spec["kernel"]
    Xs, ys, _ = task_values(data)
    offsets = np.concatenate([[0], np.cumsum(data["sizes"])])
    try:
        with np.errstate(all="ignore"):
            tasks = metasp.Tasks(hostile(np.concatenate(Xs), data["x"], data["seed"]),
                                 np.concatenate(ys) * data["y"]["scale"], offsets)
    except (ValueError, TypeError):
        reject()
    T, d = tasks.n_tasks, tasks.n_features
    r = max(1, min(spec["rank"], d))
    rng = np.random.default_rng(data["seed"] + 7)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0]
    valid = {"Theta": rng.standard_normal((T, d)), "subspace": basis,
             "C": rng.standard_normal((T, r)), "B": basis if kernel == "curvature" else basis.T,
             "heads": rng.standard_normal((T, r)), "U": basis,
             "A": rng.standard_normal((T, d)) * data["x"]["scale"],
             "warm_start": np.linalg.qr(rng.standard_normal((d, min(d, r + 1))))[0]}
    args = {}
    for name in KERNEL_ARGUMENTS[kernel]:
        if name in ("subspace", "heads", "warm_start") and options["optional"] == "omitted":
            args[name] = None
        elif name in valid:
            args[name] = vary(valid[name], options[name])
        else:
            args[name] = evaluate(options[name])
    n_jobs, s = evaluate(options["n_jobs"]), evaluate(options["s"])
    target = {"Tasks": tasks, "tuple": (tasks.X, tasks.y), "None": None,
              "array": tasks.X}[options["tasks"]]
    calls = {
        "gradient": lambda: kernels.gradient(target, args["Theta"], subspace=args["subspace"],
                                             n_jobs=n_jobs),
        "curvature": lambda: kernels.curvature(target, args["C"], args["B"], n_jobs=n_jobs),
        "task_statistics": lambda: kernels.task_statistics(target, args["B"],
                                                           heads=args["heads"], n_jobs=n_jobs),
        "marginal_pass": lambda: kernels.marginal_pass(target, args["U"], args["noise"],
                                                       n_jobs=n_jobs),
        "truncated_svd": lambda: kernels.truncated_svd(
            args["A"], s, warm_start=args["warm_start"], tol=args["tol"],
            max_steps=args["max_steps"], random_state=args["random_state"], n_jobs=n_jobs),
    }
    largest = max_magnitude(tasks.X, tasks.y, *args.values())
    accepted: tuple = (ValueError, TypeError)
    # Documented: a result beyond float64 raises FloatingPointError. The fused passes form
    # products of up to six factors of X (the curvature along the projected gradient).
    if largest >= 1e40:
        accepted += (FloatingPointError,)
    if kernel == "truncated_svd" and largest * math.sqrt(max(np.size(args["A"]), 1)) >= 1e307:
        accepted += (OverflowError,)  # documented: top singular values beyond float64
    long_run = kernel == "truncated_svd" and options.get("max_steps") == "2**31"
    try:
        with watchdog(LONG_EXAMPLE_SECONDS) if long_run else contextlib.nullcontext():
            outcome = guarded(calls[kernel], accepted=accepted)
    except ExampleTimeout:
        if long_run:
            reject()
        raise
    if isinstance(outcome, Raised):
        return
    fields = outcome._asdict() if hasattr(outcome, "_asdict") else {"curvature": outcome}
    if kernel == "marginal_pass" and not np.isfinite(outcome.deviance):
        assert outcome.deviance == np.inf, outcome.deviance  # documented: inf, zeros elsewhere
        for name in ("gradient", "heads", "task_loss"):
            assert not np.any(fields[name]), (name, fields[name])
        fields.pop("deviance")
    for name, value in fields.items():
        if value is not None and not isinstance(value, (bool, np.bool_)):
            assert_finite(value, f"{kernel}.{name}")
    if kernel == "truncated_svd":
        V = outcome.V
        assert V.shape == (np.shape(args["A"])[1], s), V.shape
        error = np.abs(V.T @ V - np.eye(s)).max()
        assert error <= ORTHONORMAL_TOL, f"V^T V is off the identity by {error:.3g}"
        sv = outcome.singular_values
        assert (sv >= 0).all() and (np.diff(sv) <= 1e-12 * max(sv.max(), 1e-300)).all(), sv


# -------------------------------------------------------------------------------------------
# Targets: the raw compiled entry points
# -------------------------------------------------------------------------------------------

INT_VARIANTS = ("0", "-1", "1", "2**31 - 1", "2**31", "2**63 - 1", "2**63", "-(2**63)",
                "10**30", "1.5", "None", "'x'", "True", "np.int64(1)", "np.uint64(2**64 - 1)")
FLOAT_VARIANTS = ("0.0", "-1.0", "float('nan')", "float('inf')", "-float('inf')", "1e-300",
                  "1e300", "5e-324", "None", "'x'", "True", "10**400", "np.float32(0.5)")
BOOL_VARIANTS = ("True", "False", "0", "1", "None", "'x'", "np.bool_(True)")
SEED_VARIANTS = ("2**64 - 1", "2**64", "-1", "1.5", "None")
TEXT_VARIANTS = ("'zero'", "'spectral'", "'given'", "'auto'", "'dense'", "'cg'", "'bogus'", "''",
                 "None", "1")
STARTS_VARIANTS = ("[V]", "[V, V]", "[V_wide]", "[V_tall]", "[V_nan]", "[None]", "['x']", "None",
                   "'x'", "[V_empty]")
RAW_OFFSET_VARIANTS = OFFSET_VARIANTS + ("int32", "uint64", "strided", "unaligned", "list",
                                         "none_value")
# Variants whose values are still finite and of ordinary size (the raw outputs must then be
# finite too).
ORDINARY = set(STRUCTURAL) | {"1", "2**31 - 1", "2**63 - 1", "np.int64(1)", "True", "False",
                              "0", "np.bool_(True)", "2**64 - 1", "'zero'", "'spectral'",
                              "'auto'", "'dense'", "'cg'", "[V]", "[V, V]"}
# Values that may make an iteration run for a long time on purpose (no hang).
LONG_VALUES = {"2**31 - 1", "2**63 - 1", "2**31", "0.0", "5e-324", "1e-300"}

# The kind of every argument of every entry point; "?" marks optional arrays (None is valid),
# "=" arguments with a default in the binding (left out unless varied).
RAW_ENTRIES = {
    "task_gradient": dict(X="design", y="vector", offsets="offsets", Theta="Theta",
                          V="V?", n_threads="count"),
    "task_curvature": dict(X="design", y="vector", offsets="offsets", C="C", B="V",
                           n_threads="count"),
    "task_statistics": dict(X="design", y="vector", offsets="offsets", V="V", W="C?",
                            n_threads="count"),
    "marginal_pass": dict(X="design", y="vector", offsets="offsets", U="V", noise="real",
                          n_threads="count"),
    "head_prior_em_step": dict(gram="gram", cross="cross", squares="squares", mean="mean",
                               cov="cov", noise="real", n="real", floor="real",
                               n_threads="count"),
    "truncated_svd": dict(A="Theta", s="count", warm_start="warm?", seed="seed",
                          n_threads="count", tol="real", max_steps="count"),
    "solve": dict(X="design", y="vector", offsets="offsets", s="count", adaptive_step="flag",
                  step="real", max_iter="count", tol="real", n_threads="count", seed="seed",
                  reference_B="Bt?", divergence_factor="real", svd_tol="real",
                  svd_max_steps="count", svd_relative_tol="real=", conjugate="flag=",
                  polish="flag=", init="text=", init_B="Bt?=", starts="starts=",
                  sin_tol="real=", switch_tol="real=", switch_window="count=",
                  patience="count=", max_dense="count="),
    "polish": dict(X="design", y="vector", offsets="offsets", V0="V", max_iter="count",
                   tol="real", n_threads="count", reference_B="Bt?=", sin_tol="real=",
                   max_dense="count=", newton="flag=", newton_solve="text="),
    "max_threads": dict(),
}
# The arguments of solve and polish that are fields of their options object (SolveOptions,
# PolishOptions), by their path in it; the rest are passed to the call.
RAW_OPTION_FIELDS = {
    "solve": {"adaptive_step": "adaptive_step", "step": "step", "max_iter": "max_iter",
              "tol": "tol", "n_threads": "n_threads", "seed": "seed",
              "reference_B": "reference_B", "divergence_factor": "divergence_factor",
              "svd_tol": "svd.tol", "svd_max_steps": "svd.max_steps",
              "svd_relative_tol": "svd.relative_tol", "conjugate": "conjugate",
              "polish": "polish", "init": "init", "init_B": "init_B", "starts": "starts",
              "sin_tol": "sin_tol", "switch_tol": "switch_tol",
              "switch_window": "switch_window", "patience": "patience",
              "max_dense": "basis.max_dense"},
    "polish": {"max_iter": "max_iter", "tol": "tol", "n_threads": "n_threads",
               "reference_B": "reference_B", "sin_tol": "sin_tol",
               "max_dense": "basis.max_dense", "newton": "newton",
               "newton_solve": "basis.newton_solve"},
}
RAW_OPTION_CLASSES = {"solve": "SolveOptions", "polish": "PolishOptions"}
RAW_SCALARS = {"count": INT_VARIANTS, "real": FLOAT_VARIANTS, "flag": BOOL_VARIANTS,
               "seed": SEED_VARIANTS, "text": TEXT_VARIANTS, "starts": STARTS_VARIANTS,
               "offsets": RAW_OFFSET_VARIANTS}
# Valid values of the scalar arguments: (entry, name) first, then by kind.
RAW_DEFAULTS = {"count": 2, "real": 1e-10, "flag": True, "seed": 0}
RAW_NAMED_DEFAULTS = {
    ("marginal_pass", "noise"): 0.5, ("head_prior_em_step", "noise"): 1.0,
    ("head_prior_em_step", "n"): 20.0, ("head_prior_em_step", "floor"): 0.0,
    ("solve", "step"): 1.0, ("solve", "divergence_factor"): 1e8, ("solve", "svd_tol"): 1e-12,
    ("solve", "svd_max_steps"): 300, ("truncated_svd", "tol"): 1e-12,
    ("truncated_svd", "max_steps"): 300, ("solve", "max_iter"): 5, ("polish", "max_iter"): 5,
    ("head_prior_em_step", "n_threads"): 1, ("truncated_svd", "n_threads"): 1,
    ("solve", "n_threads"): 1,
}


def _raw_menu(kind: str) -> tuple:
    return RAW_SCALARS.get(kind.rstrip("=").rstrip("?"), STRUCTURAL + VALUE_VARIANTS)


@st.composite
def raw_specs(draw):
    entry = draw(st.sampled_from(tuple(RAW_ENTRIES)))
    arguments = RAW_ENTRIES[entry]
    T, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    changed = draw(st.lists(st.sampled_from(tuple(arguments)), max_size=3, unique=True)
                   ) if arguments else []
    return {"entry": entry, "T": T, "d": d, "s": draw(st.integers(1, min(T, d))),
            "sizes": tuple(draw(st.lists(st.integers(1, 4), min_size=T, max_size=T))),
            "seed": draw(st.integers(0, 2**16)),
            "scale": draw(st.sampled_from((1.0,) * 6 + (0.0, 1e-300, 1e300))),
            "float32": draw(st.sampled_from((False,) * 3 + (True,))),
            "variants": {name: draw(st.sampled_from(_raw_menu(arguments[name])))
                         for name in changed}}


def _raw_valid(spec: dict) -> dict:
    """Valid values of every array kind, for the spec's small problem."""
    rng = np.random.default_rng(spec["seed"])
    T, d, s, sizes = spec["T"], spec["d"], spec["s"], spec["sizes"]
    N = sum(sizes)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = rng.standard_normal((N, d)) * spec["scale"]
        if spec["float32"]:
            X = X.astype(np.float32)
        V = np.asfortranarray(np.linalg.qr(rng.standard_normal((d, s)))[0])
        Z = np.asarray(X, dtype=np.float64) @ V
        y = rng.standard_normal(N)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        pieces = list(zip(offsets[:-1], offsets[1:]))
        gram = np.stack([Z[a:b].T @ Z[a:b] for a, b in pieces])
        cross = np.stack([Z[a:b].T @ y[a:b] for a, b in pieces])
    return {"design": X, "vector": y, "offsets": offsets, "Theta": rng.standard_normal((T, d)),
            "V": V, "C": rng.standard_normal((T, s)), "gram": gram, "cross": cross,
            "squares": np.add.reduceat(y * y, offsets[:-1]), "mean": np.zeros(s),
            "cov": np.eye(s), "Bt": np.ascontiguousarray(V.T),
            "warm": np.asfortranarray(np.linalg.qr(rng.standard_normal((d, min(d, s + 1))))[0])}


def raw_arguments(spec: dict) -> dict:
    entry, variants = spec["entry"], spec["variants"]
    valid = _raw_valid(spec)
    d, s = spec["d"], spec["s"]
    names = {"V": valid["V"], "V_wide": np.ones((d, s + 1)), "V_tall": np.ones((d + 1, s)),
             "V_nan": np.full((d, s), np.nan), "V_empty": np.zeros((d, 0))}
    arguments = {}
    for name, kind in RAW_ENTRIES[entry].items():
        base = kind.rstrip("=").rstrip("?")
        if name not in variants:
            if kind.endswith("="):
                continue
            if "?" in kind:
                arguments[name] = None
            elif name == "s":
                arguments[name] = s
            elif base in RAW_DEFAULTS:
                arguments[name] = RAW_NAMED_DEFAULTS.get((entry, name), RAW_DEFAULTS[base])
            else:
                arguments[name] = valid[base]
            continue
        variant = variants[name]
        if base in RAW_SCALARS and base != "offsets":
            arguments[name] = evaluate(variant, names)
        elif base == "offsets":
            offsets = valid["offsets"]
            arguments[name] = (with_layout(offsets, variant)
                               if variant in ("strided", "unaligned", "list")
                               else None if variant == "none_value"
                               else bad_offsets(offsets, variant))
        elif base == "design" and variant == "ok":
            arguments[name] = valid["design"]  # float32 stays float32
        else:
            arguments[name] = vary(valid[base], variant)
    return arguments


def raw_call(entry: str, arguments: dict):
    """The call of _core's ``entry`` with ``arguments``; for solve and polish those that are
    option fields are set on a fresh options object (where a bad value may already raise)."""
    function = getattr(_core, entry)
    fields = RAW_OPTION_FIELDS.get(entry)
    if fields is None:
        return lambda: function(**arguments)

    def call():
        options = getattr(_core, RAW_OPTION_CLASSES[entry])()
        passed = {}
        for name, value in arguments.items():
            if name not in fields:
                passed[name] = value
                continue
            *parents, field = fields[name].split(".")
            target = options
            for parent in parents:
                target = getattr(target, parent)
            setattr(target, field, value)
        out = function(**passed, options=options)
        if isinstance(out, dict):
            return out
        return dict(Theta=out.Theta, W=out.W, B=out.B, singular_values=out.singular_values,
                    n_iter=out.n_iter, status=out.status, start_loss=out.start_loss,
                    **out.history)
    return call


def _finite_outputs(value, name="output", conjugate=False):
    if isinstance(value, dict):
        polish = np.asarray(value.get("phase", ())) != 0
        for key, item in value.items():
            if key == "beta" and not conjugate:  # NaN without conjugate adaptive steps
                continue
            if key in ("step", "beta") and polish.any():  # NaN in the polish phase
                item = np.asarray(item)[~polish[:len(item)]]
            _finite_outputs(item, f"{name}[{key!r}]")
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            _finite_outputs(item, f"{name}[{index}]")
    elif value is not None and not isinstance(value, (str, bool)):
        assert_finite(value, name)


def check_raw(spec: dict) -> None:
    entry, variants = spec["entry"], spec["variants"]
    arguments = raw_arguments(spec)
    call = raw_call(entry, arguments)
    long_run = any(value in LONG_VALUES for value in variants.values())
    accepted: tuple = (ValueError, TypeError)
    if entry == "truncated_svd" and variants.get("A") in ("huge", "max"):
        accepted += (OverflowError,)  # documented: top singular values beyond float64
    try:
        with watchdog(LONG_EXAMPLE_SECONDS) if long_run else contextlib.nullcontext():
            outcome = guarded(call, accepted=accepted)
    except ExampleTimeout:
        if long_run:
            reject()
        raise
    if isinstance(outcome, Raised) or entry == "max_threads":
        return
    ordinary = spec["scale"] == 1.0 and all(v in ORDINARY for v in variants.values())
    if not ordinary:
        return
    if entry == "marginal_pass" and not np.isfinite(outcome[0]):
        assert outcome[0] == np.inf, outcome[0]  # documented: inf where not defined
        return
    _finite_outputs(outcome, entry, conjugate=arguments.get("conjugate") is True
                    and arguments.get("adaptive_step") is True)


# -------------------------------------------------------------------------------------------
# Registry, subprocess runner and the tests
# -------------------------------------------------------------------------------------------

# name: (strategy, check, weight: examples in the normal run)
TARGETS = {
    "tasks_constructors": (tasks_specs(), check_tasks, 250),
    "fit_auto": (fit_specs("auto"), check_fit, 300),
    "fit_fixed": (fit_specs("fixed"), check_fit, 350),
    "polish": (polish_specs(), check_polish, 200),
    "select_rank": (select_rank_specs(), check_select_rank, 80),
    "adapt_predict": (adapt_specs(), check_adapt_predict, 250),
    "baselines": (baseline_specs(), check_baseline, 150),
    "kernels": (kernel_specs(), check_kernel, 400),
    "core_raw": (raw_specs(), check_raw, 600),
}


def _crash(spec: dict) -> None:
    if spec["crash"]:
        os.kill(os.getpid(), signal.SIGSEGV)


# Targets that check the runner itself (not run by test_fuzz_target).
RUNNER_TARGETS = {
    "crash_on_purpose": (st.fixed_dictionaries({"crash": st.booleans()}), _crash, 5),
    "nothing": (st.fixed_dictionaries({}), lambda spec: None, 1),
}


def _log(name: str, spec: dict) -> None:
    print(f"@@example {name} {spec!r}", flush=True)


def hypothesis_test(name: str):
    strategy, check, weight = {**TARGETS, **RUNNER_TARGETS}[name]

    def run(spec):
        _log(name, spec)
        with watchdog(EXAMPLE_SECONDS):
            check(spec)

    run.__name__ = run.__qualname__ = f"fuzz_{name}"
    return _settings(weight)(given(spec=strategy)(run))


def replay(name: str, spec: dict) -> None:
    """Run one example of target ``name`` outside Hypothesis (``reject`` counts as a pass)."""
    try:
        TARGETS[name][1](spec)
    except Exception as error:  # noqa: BLE001
        if type(error).__name__ == "UnsatisfiedAssumption":
            print("the example was left out (rejected)")
            return
        raise


def _worker(names) -> None:
    """Run the named targets, one line of protocol before and after each."""
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _on_alarm)
    for name in names:
        print(f"@@start {name}", flush=True)
        OUTCOMES.clear()
        try:
            hypothesis_test(name)()
        except BaseException as error:  # noqa: BLE001
            text = "".join(traceback.format_exception(error))
            if len(text) > 12000:
                text = f"{text[:4000]}\n[...]\n{text[-8000:]}"
            print(f"@@fail {name} {json.dumps(text)}", flush=True)
        else:
            print(f"@@pass {name}", flush=True)
        print(f"@@outcomes {name} {json.dumps(OUTCOMES)}", flush=True)


def run_targets(names, cwd) -> dict:
    """{name: None for a pass, or what went wrong}, the targets run one after the other in a
    fresh interpreter; after a crash or a hang, a new one resumes with the next target."""
    outcomes, pending = {}, list(names)
    while pending:
        process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--worker",
             *pending], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        try:
            stdout, stderr = process.communicate(timeout=RUN_SECONDS)
            ended = f"exit code {process.returncode}"
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            ended = f"still running after {RUN_SECONDS} s (killed)"
        last_example, current = {}, None
        for line in stdout.splitlines():
            tag, _, rest = line.partition(" ")
            if tag == "@@start":
                current = rest
            elif tag == "@@example":
                target, _, example = rest.partition(" ")
                last_example[target] = example
            elif tag == "@@pass":
                outcomes[rest] = None
            elif tag == "@@fail":
                target, _, text = rest.partition(" ")
                outcomes[target] = json.loads(text)
        unfinished = [name for name in pending if name not in outcomes]
        if unfinished:
            stuck = current if current in unfinished else unfinished[0]
            outcomes[stuck] = (f"the interpreter died or hung ({ended}) in target {stuck!r}; "
                               f"last example:\n{last_example.get(stuck, '(none)')}\n"
                               f"stderr:\n{stderr[-4000:]}")
        elif process.returncode != 0 and outcomes.get(pending[-1]) is None:
            outcomes[pending[-1]] = (f"every example ran, then the interpreter failed on exit "
                                     f"({ended}):\n{stderr[-4000:]}")
        pending = [name for name in pending if name not in outcomes]
    return outcomes


@pytest.mark.parametrize("target", list(TARGETS))
def test_fuzz_target(target, tmp_path):
    failure = run_targets([target], tmp_path)[target]
    if failure is not None:
        pytest.fail(f"fuzz target {target!r} (profile {PROFILE!r}) failed:\n{failure}",
                    pytrace=False)


@pytest.mark.skipif(not hasattr(signal, "SIGSEGV") or sys.platform == "win32",
                    reason="POSIX signals")
def test_a_crash_fails_its_target_and_the_run_goes_on(tmp_path):
    outcomes = run_targets(["crash_on_purpose", "nothing"], tmp_path)
    assert "died or hung" in outcomes["crash_on_purpose"]
    assert "'crash': True" in outcomes["crash_on_purpose"]
    # faulthandler's report, or AddressSanitizer's where it is preloaded
    assert any(report in outcomes["crash_on_purpose"]
               for report in ("Segmentation fault", "AddressSanitizer: SEGV"))
    assert outcomes["nothing"] is None


def test_replay_runs_one_example():
    """The replay path the failures point to works, on a well-formed example."""
    spec = {"data": {"form": "array", "sizes": (6,) * 8, "d": 4, "seed": 0, "rank": 2,
                     "noise": 0.1, "x": {"dtype": "float64", "layout": "C", "scale": 1.0,
                                         "bad": None},
                     "y": {"dtype": "float64", "layout": "C", "scale": 1.0, "bad": None},
                     "task_scales": None, "y_shape": "ok", "ragged": False},
            "options": {"s": "2", "max_iter": "50", "tol": "1e-10", "n_jobs": "None",
                        "random_state": "0", "init": "'zero'", "reference_B": "None",
                        "sin_tol": "None", "heads": "'auto'"}}
    assert ast.literal_eval(repr(spec)) == spec
    replay("fit_auto", spec)


# -------------------------------------------------------------------------------------------
# Regressions: minimal inputs of violations the fuzzing found
# -------------------------------------------------------------------------------------------
# None of them crashes, so they run in this process.


def _strictly(call):
    """``call()`` with every warning recorded: (value, warnings other than metasp's)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [f"{w.category.__name__}: {w.message}" for w in caught
                   if not issubclass(w.category, METASP_WARNINGS)]


def _tiny_problem(T=20, m=10, d=5, s=2):
    X, y, _, _ = metasp.datasets.make_hps(T=T, m=m, d=d, s=s, sigma=0.1, random_state=0)
    return X, y


def test_fixed_step_on_large_X_warns_with_metasp_classes_only():
    X, y = _tiny_problem()
    result, others = _strictly(lambda: metasp.fit(X * 1e160, y, 2, heads="fixed", step=1.0,
                                                  max_iter=5))
    assert not others, others


# Two ordinary tasks (d = 4, m = 2 and 5) found by the long run.
EXP_OVERFLOW_XS = [
    np.array([[0.8799003751433262, 0.6376331108390758, 1.4098711969174338, -0.6013371435008042],
              [-1.3141295287642631, 0.34707105924507203, 0.30928530325756975,
               -0.8555222693669294]]),
    np.array([[-0.5333133801615554, 0.1946808667698343, 0.3442433434023035, 0.4858186700589222],
              [1.0229046256720604, 0.5884812979394284, 1.3996596900845397, -0.8102606906416148],
              [-0.4721162046105154, 0.8197165206408423, -0.44243047086296666,
               -0.5598614612204968],
              [-0.04549085153468015, 0.3522498740560033, -0.4976770833287136,
               0.5931558869364731],
              [1.3875743135329424, -1.7844949637251184, -2.2867480707439607,
               0.7529525996120232]]),
]
EXP_OVERFLOW_YS = [
    np.array([0.4547966204291022, 0.13896672645225272]),
    np.array([0.31786475240146517, 1.3033210237719821, 3.3661063089500978, -0.1169554271918839,
              -4.366252418957842]),
]


def test_random_heads_trial_steps_beyond_exps_range_step_back():
    # An L-BFGS trial step once pushed the log noise variance past exp's range on this
    # ordinary data: the fit then ended in "noise must be a positive finite number; got inf".
    def fit():
        try:
            return metasp.fit(EXP_OVERFLOW_XS, EXP_OVERFLOW_YS, 1, init=[[4, 0, 7, 3]])
        except ValueError as error:
            raise AssertionError(f"valid input refused: {error}") from None

    result, others = _strictly(fit)
    assert not others, others
    check_result(result, 2, 4, 1)


def _no_stray_warning(call, reraise=False):
    """``call()`` may raise ValueError or TypeError (re-raised with ``reraise``), but warn
    with metasp's classes only."""
    raised = []

    def guarded_call():
        try:
            call()
        except (ValueError, TypeError) as error:
            raised.append(error)

    _, others = _strictly(guarded_call)
    assert not others, others
    if reraise and raised:
        raise raised[0]


def test_from_list_float32_overflow_is_a_clean_error():
    # The cast used to warn, and the message that followed blamed NaN or inf in X.
    with pytest.raises(ValueError, match="beyond the range of float32"):
        _no_stray_warning(lambda: metasp.Tasks.from_list([[[1e160]]], [[1.0]],
                                                         dtype=np.float32), reraise=True)


def test_nuclear_norm_on_zero_X_is_a_clean_error():
    # 1 / (a Lipschitz constant of 0) used to warn, then blame NaN or inf in "A".
    with pytest.raises(ValueError, match="X is 0 in every task"):
        _no_stray_warning(lambda: baselines.nuclear_norm([np.zeros((3, 2))] * 2,
                                                         [np.ones(3)] * 2, 1, lam=0.1,
                                                         max_iter=5), reraise=True)


def test_select_rank_refuses_a_tiny_task_before_splitting():
    # The held-out tasks' posterior heads used to overflow np.ldexp before the scale error.
    Xs = [np.array([[0.4e-250], [1.3e-250], [0.9e-250]]), np.array([[0.04], [-2.3], [-0.2]]),
          np.array([[-0.3]]), np.array([[1.0]])]
    ys = [np.array([-1.2e-251, -3e-251, -1.9e-251]), np.array([-0.1, -1.6, -0.2]),
          np.array([0.008]), np.array([-0.57])]
    with pytest.raises(ValueError, match="task 0 .* below 2\\^-200"):
        _no_stray_warning(lambda: metasp.select_rank(Xs, ys, ranks=(1,), cv=2, holdout="tasks",
                                                     shots=(1, 2), random_state=0),
                          reraise=True)


_X5 = np.array([[-0.8028369359828766, 0.2428499070790021],
                [-1.656345427042233, 0.656104877556666],
                [1.1434530226920894, -0.45261100300789897],
                [0.4304857455543092, 0.25093256908418204],
                [-0.3943520554588936, -0.8624048655156082]])
_Y5 = np.array([-0.5958595524561577, -1.186249660120406, 0.8190152314916899,
                0.42537936026200135, -0.565380142828718])
LBFGS_OVERFLOW_CASES = {
    # a noiseless task and a task of zeros, s = d = 2: converges
    "zero task": ([np.zeros((5, 2)), _X5], [np.zeros(5), _Y5], 2, {}),
    # two tasks of one sample each, d = 3: stalls
    "one sample each": (np.array([[[0.5799584304971338, -3.0522156238925513, 0.613205500268331]],
                                  [[0.03635456388922731, 0.2598425561172785,
                                    -2.256869545275542]]]),
                        np.array([[-0.6884765625], [0.002857208251953125]]), 1,
                        {"max_iter": 20, "random_state": 0}),
}


@pytest.mark.parametrize("case", list(LBFGS_OVERFLOW_CASES))
def test_random_heads_lbfgs_does_not_overflow_on_tiny_problems(case):
    # np.linalg.norm of an L-BFGS gradient difference used to overflow with a RuntimeWarning.
    Xs, ys, s, options = LBFGS_OVERFLOW_CASES[case]
    result, others = _strictly(lambda: metasp.fit(Xs, ys, s, **options))
    assert not others, others


def test_anil_whose_inner_loop_overflows_reports_divergence():
    # kernels.gradient's FloatingPointError used to escape anil.
    X, y = _tiny_problem(T=10, m=4, d=3, s=1)
    with pytest.warns(metasp.DivergenceWarning, match="anil diverged"):
        result = baselines.anil(X, y, 1, inner_lr=1e10, max_iter=3, random_state=0)
    assert result.status == "diverged"
    check_result(result, 10, 3, 1)


def test_single_task_ridge_on_large_X_is_solved():
    # The dual system X X^T + m ridge I is singular in float64 here (LinAlgError before); the
    # solution is X^T y / (|X|^2 + m ridge).
    X, y = np.array([[1e10], [2e10]]), np.array([1.0, 2.0])
    result = baselines.single_task([X], [y], 1, ridge=1.0)
    expected = X[:, 0] @ y / (X[:, 0] @ X[:, 0] + 2 * 1.0)
    np.testing.assert_allclose(result.Theta, [[expected]], rtol=1e-12)


def test_adapt_with_fewer_samples_than_rank_on_large_X():
    # Z^T Z + noise / cov is singular in float64 here (LinAlgError before). With X of 1e20 the
    # samples pin Z w = y, that is Z' w = 1e-20 y ~ 0 for Z' = Z / 1e20, and the prior fills in
    # the rest: to float64 precision the head is mu projected onto Z' w = 0 in the prior's
    # metric, mu - Sigma Z'^T (Z' Sigma Z'^T)^-1 Z' mu.
    X, y = _tiny_problem(T=4, m=3, d=4, s=4)
    result, _ = _strictly(lambda: metasp.fit(X, y, 4, max_iter=50, random_state=0))
    rng = np.random.default_rng(0)
    for _ in range(3):  # the third of these new tasks
        X_new, y_new = rng.standard_normal((3, 4)) * 1e20, rng.standard_normal(3)
    w, others = _strictly(lambda: result.adapt(X_new, y_new))
    assert not others, others
    Z, mu, Sigma = X_new * 1e-20 @ result.B.T, result.head_mean, result.head_cov
    expected = mu - Sigma @ Z.T @ np.linalg.solve(Z @ Sigma @ Z.T, Z @ mu)
    np.testing.assert_allclose(w, expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())


def test_diverged_start_reports_its_last_finite_loss():
    # It used to be NaN.
    X, y = _tiny_problem()
    result, _ = _strictly(lambda: metasp.fit(X, y, 2, heads="fixed", step=1e300))
    assert result.status == "diverged"
    np.testing.assert_allclose(result.history["start_loss"], [np.mean(y**2)], rtol=1e-12)


def test_step_history_saturates_on_tiny_X():
    # The step in the data's units, about 1 / |X|^2, is beyond float64: it used to be inf.
    X, y = _tiny_problem()
    result, _ = _strictly(lambda: metasp.fit(X * 1e-300, y, 2, heads="fixed", max_iter=50))
    iht = result.history["phase"] == "iht"
    assert (result.history["step"][iht] == np.finfo(float).max).all(), result.history["step"]


def test_adapt_ridge_on_large_X_does_not_overflow():
    # Z^T Z used to overflow, with NumPy's warning and a head of -0.
    X, y = _tiny_problem(T=2, m=2, d=1, s=1)
    result, _ = _strictly(lambda: metasp.fit(X * 1e300, y, 1, max_iter=50, random_state=0))
    rng = np.random.default_rng(5)
    X_new, y_new = rng.standard_normal((3, 1)) * 1e300, rng.standard_normal(3)
    w, others = _strictly(lambda: result.adapt(X_new, y_new, ridge=1.0))
    assert not others, (others, w)
    z, b = X_new[:, 0] * 1e-300 * result.B[0, 0], y_new  # least squares, on a safe scale
    np.testing.assert_allclose(w * 1e300, [z @ b / (z @ z)], rtol=1e-12)


def test_adapt_head_beyond_float64_raises():
    # It used to return [inf], silently.
    X, y = _tiny_problem(T=2, m=2, d=1, s=1)
    result, _ = _strictly(lambda: metasp.fit(X * 1e-300, y, 1, max_iter=50, random_state=0))
    with pytest.raises(FloatingPointError, match="the head is beyond the float64 range"):
        _strictly(lambda: result.adapt([[1e-300], [2e-300], [-1e-300]], [1e20, 2e20, -1e20],
                                       prior="none"))


def test_predict_beyond_float64_raises():
    # It used to return inf, with NumPy's warning.
    X, y = _tiny_problem(T=2, m=2, d=1, s=1)
    result, _ = _strictly(lambda: metasp.fit(X, y, 1, random_state=0))
    with pytest.raises(FloatingPointError, match="the prediction is beyond the float64 range"):
        _strictly(lambda: result.predict([[1e300]], [1e10]))


def test_select_rank_spread_is_finite_on_large_y():
    # The squares of MSEs of about 1e160 used to overflow: std_mse was inf.
    X, y = _tiny_problem(T=10, m=6, d=3, s=1)
    fit = {"ranks": (1, 2), "cv": 2, "random_state": 0}
    selection, others = _strictly(lambda: metasp.select_rank(X, y * 1e80, **fit))
    assert not others, others
    unscaled = metasp.select_rank(X, y, **fit)
    np.testing.assert_allclose(selection.std_mse, unscaled.std_mse * 1e160, rtol=1e-3)


def test_raw_core_refuses_complex_arrays():
    # Arguments without .noconvert() used to drop the imaginary part, with a ComplexWarning.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 2)), rng.standard_normal(4)
    offsets = np.array([0, 2, 4], dtype=np.int64)
    V = np.linalg.qr(rng.standard_normal((2, 1)))[0] + 1j
    with pytest.raises(TypeError):
        _strictly(lambda: _core.task_gradient(X, y, offsets, np.zeros((2, 2)), V, 1))


def main(argv) -> int:
    if argv and argv[0] == "--worker":
        _worker(argv[1:])
        return 0
    if len(argv) == 3 and argv[1] == "--spec":
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, _on_alarm)
        replay(argv[0], ast.literal_eval(argv[2]))
        print("the example passed")
        return 0
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _on_alarm)
    for name in argv or list(TARGETS):
        print(f"target {name}", flush=True)
        hypothesis_test(name)()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
