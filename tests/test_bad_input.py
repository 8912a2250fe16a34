"""Bad input fails in Python with the right exception and a message naming the problem.

Every case starts from valid data and breaks one thing. The fit cases run through both
:func:`metasp.fit` and :func:`metasp.reference.fit`, which share their validation.
"""

import numpy as np
import pytest

import metasp
from metasp import Tasks

X, Y, B_TRUE, _ = metasp.datasets.make_hps(T=20, m=8, d=10, s=2, random_state=0)
for _array in (X, Y, B_TRUE):
    _array.flags.writeable = False  # cases copy before they break anything
T, M, D = X.shape
S = 2
N = T * M
X_FLAT, Y_FLAT = X.reshape(N, D), Y.reshape(N)
OFFSETS = np.arange(T + 1) * M
NAN, INF = float("nan"), float("inf")

FIT_FUNCTIONS = {"fit": metasp.fit, "reference": metasp.reference.fit}
FITS = [pytest.param(function, id=name) for name, function in FIT_FUNCTIONS.items()]


def call(*args, **kwargs):
    return args, kwargs


def changed(array, index, value, dtype=None):
    """A copy of ``array`` (cast to ``dtype``) with ``array[index] = value``."""
    out = np.array(array, dtype=dtype)
    out[index] = value
    return out


def replaced(items, t, value):
    """The list ``items`` with entry ``t`` replaced."""
    items = list(items)
    items[t] = value
    return items


def params(cases):
    """pytest params from (id, *values) tuples; entries that already are pytest.param pass."""
    return [case if hasattr(case, "marks") else pytest.param(*case[1:], id=case[0])
            for case in cases]


def assert_raises_exactly(error, match, function, *args, **kwargs):
    with pytest.raises(error, match=match) as info:
        function(*args, **kwargs)
    # ValueError and TypeError are distinct answers: a class deriving from both is not allowed.
    assert info.type is error


# (id, () -> (args, kwargs) of fit, exception, regex on the message)
BAD_FIT = [
    # The task structure.
    ("list: fewer ys than Xs", lambda: call(list(X), list(Y)[:-1], S), ValueError,
     r"20 design matrices but 19 target vectors"),
    ("list: more ys than Xs", lambda: call(list(X)[:-1], list(Y), S), ValueError,
     r"19 design matrices but 20 target vectors"),
    ("list: X and y lengths differ", lambda: call(list(X), replaced(Y, 3, Y[3][:-1]), S),
     ValueError, r"task 3: Xs\[3\] has 8 rows but ys\[3\] has 7 entries"),
    ("3-D: X and y lengths differ", lambda: call(X, Y[:, :-1], S), ValueError,
     r"y must have shape \(20, 8\)"),
    ("3-D: X and y task counts differ", lambda: call(X, Y[:-1], S), ValueError,
     r"y must have shape \(20, 8\)"),
    ("list: tasks with different d", lambda: call(replaced(X, 5, X[5][:, :-1]), list(Y), S),
     ValueError, r"same number of features.*Xs\[5\] has 9"),
    ("list: an empty task",
     lambda: call(replaced(X, 2, X[2][:0]), replaced(Y, 2, Y[2][:0]), S), ValueError,
     r"task 2 is empty"),
    ("list: no tasks", lambda: call([], [], S), ValueError, r"no tasks"),
    ("3-D: no tasks (T = 0)", lambda: call(X[:0], Y[:0], S), ValueError, r"no tasks.*T = 0"),
    ("3-D: empty tasks (m = 0)", lambda: call(X[:, :0], Y[:, :0], S), ValueError,
     r"every task is empty"),
    ("3-D: no features (d = 0)", lambda: call(X[:, :, :0], Y, S), ValueError, r"no features"),
    # Non-numeric data.
    ("3-D: string X", lambda: call(X.astype(str), Y, S), TypeError, r"X has dtype .* not numeric"),
    ("3-D: string y", lambda: call(X, Y.astype(str), S), TypeError, r"y has dtype .* not numeric"),
    ("list: string X", lambda: call(replaced(X, 0, X[0].astype(str)), list(Y), S), TypeError,
     r"Xs\[0\] has dtype .* not numeric"),
    ("list: object y holding None",
     lambda: call(list(X), replaced(Y, 1, changed(Y[1], 0, None, dtype=object)), S), TypeError,
     r"ys\[1\] has dtype object, which is not numeric"),
    ("3-D: object X holding None", lambda: call(changed(X, (0, 0, 0), None, dtype=object), Y, S),
     TypeError, r"X has dtype object, which is not numeric"),
    ("3-D: complex X", lambda: call(X.astype(complex), Y, S), TypeError, r"X has complex dtype"),
    ("list: complex y", lambda: call(list(X), replaced(Y, 0, Y[0] + 1j), S), TypeError,
     r"ys\[0\] has complex dtype"),
    ("list: ragged nested list X", lambda: call(replaced(X, 0, [[1.0, 2.0], [3.0]]), list(Y), S),
     TypeError, r"Xs\[0\] could not be read as a numeric array"),
    # Wrong dimensionality.
    ("list: 1-D X", lambda: call(replaced(X, 0, X[0][:, 0]), list(Y), S), ValueError,
     r"Xs\[0\] must be 2-D"),
    ("list: 3-D X", lambda: call(replaced(X, 0, X[0][None]), list(Y), S), ValueError,
     r"Xs\[0\] must be 2-D"),
    ("list: 3-D y", lambda: call(list(X), Y[:, :, None], S), ValueError, r"ys\[0\] must be 1-D"),
    ("list: 2-D y entry", lambda: call(list(X), replaced(Y, 4, Y[4][:, None]), S), ValueError,
     r"ys\[4\] must be 1-D"),
    ("array: 2-D X with 2-D y", lambda: call(X_FLAT, Y, S), ValueError, r"X must be 3-D"),
    ("array: 3-D X with 1-D y", lambda: call(X, Y_FLAT, S), ValueError, r"y must be 2-D"),
    ("array: 3-D X with 3-D y", lambda: call(X, Y[:, :, None], S), ValueError, r"y must be 2-D"),
    ("array: 4-D X", lambda: call(X[None], Y, S), ValueError, r"X must be 3-D"),
    ("not a task container", lambda: call("X", "y", S), TypeError, r"tasks must be given as"),
    # The rank s.
    ("s = 0", lambda: call(X, Y, 0), ValueError, r"1 <= s <= min\(T, d\) = 10"),
    ("s < 0", lambda: call(X, Y, -1), ValueError, r"1 <= s <= min\(T, d\) = 10"),
    ("s > d", lambda: call(X, Y, D + 1), ValueError, r"1 <= s <= min\(T, d\) = 10.*got s = 11"),
    ("s > T", lambda: call(X[:3], Y[:3], 4), ValueError, r"1 <= s <= min\(T, d\) = 3"),
    ("s float", lambda: call(X, Y, 2.0), TypeError, r"rank s must be an integer"),
    ("s bool", lambda: call(X, Y, True), TypeError, r"rank s must be an integer"),
    ("s string", lambda: call(X, Y, "2"), TypeError, r"rank s must be an integer"),
    ("s missing", lambda: call(X, Y), TypeError, r"rank s is missing"),
    # Options.
    *[(f"step={step!r}", lambda step=step: call(X, Y, S, step=step), ValueError,
       r"fixed step must be positive and finite") for step in (-0.1, 0, 0.0, NAN, INF)],
    ("step='fast'", lambda: call(X, Y, S, step="fast"), ValueError, r"step must be 'auto'"),
    *[(f"step={step!r}", lambda step=step: call(X, Y, S, step=step), TypeError,
       r"step must be 'auto' or a positive number") for step in ([0.1], None, True)],
    *[(f"tol={tol!r}", lambda tol=tol: call(X, Y, S, tol=tol), ValueError,
       r"tol must be non-negative and finite") for tol in (-1e-6, NAN, INF)],
    *[(f"tol={tol!r}", lambda tol=tol: call(X, Y, S, tol=tol), TypeError,
       r"tol must be a real number") for tol in ("1e-6", None)],
    *[(f"max_iter={n!r}", lambda n=n: call(X, Y, S, max_iter=n), ValueError,
       r"max_iter must be at least 1") for n in (0, -3)],
    *[(f"max_iter={n!r}", lambda n=n: call(X, Y, S, max_iter=n), TypeError,
       r"max_iter must be an integer") for n in (2.5, True, "10")],
    ("n_jobs=0", lambda: call(X, Y, S, n_jobs=0), ValueError, r"n_jobs=0 is not allowed"),
    *[(f"n_jobs={n!r}", lambda n=n: call(X, Y, S, n_jobs=n), TypeError,
       r"n_jobs must be an integer or None") for n in ("2", 1.5)],
    ("random_state='seed'", lambda: call(X, Y, S, random_state="seed"), TypeError,
     r"random_state must be"),
    *[(f"init={init!r}", lambda init=init: call(X, Y, S, init=init), ValueError,
       r"init must be 'zero'") for init in ("random", "zeros", None)],
    # reference_B.
    ("reference_B (s+1, d)",
     lambda: call(X, Y, S, reference_B=np.vstack([B_TRUE, np.eye(1, D, 9)])), ValueError,
     r"reference_B must have shape \(s, d\) = \(2, 10\)"),
    ("reference_B (s, d-1)", lambda: call(X, Y, S, reference_B=B_TRUE[:, :-1]), ValueError,
     r"reference_B must have d = 10 columns"),
    ("reference_B 1-D", lambda: call(X, Y, S, reference_B=B_TRUE[0]), ValueError,
     r"reference_B must be a non-empty 2-D array"),
    ("reference_B (0, d)", lambda: call(X, Y, S, reference_B=B_TRUE[:0]), ValueError,
     r"reference_B must be a non-empty 2-D array"),
    ("reference_B more rows than columns",
     lambda: call(X, Y, S, reference_B=np.ones((D + 1, D))), ValueError, r"more rows than columns"),
    ("reference_B rank-deficient",
     lambda: call(X, Y, S, reference_B=np.vstack([B_TRUE[0], 2 * B_TRUE[0]])), ValueError,
     r"reference_B does not have full row rank"),
    ("reference_B zero", lambda: call(X, Y, S, reference_B=np.zeros((S, D))), ValueError,
     r"reference_B does not have full row rank"),
    ("reference_B with NaN", lambda: call(X, Y, S, reference_B=changed(B_TRUE, (1, 3), NAN)),
     ValueError, r"reference_B contains NaN or inf"),
    ("reference_B strings", lambda: call(X, Y, S, reference_B=B_TRUE.astype(str)), TypeError,
     r"reference_B must be a real numeric array"),
    # How the tasks are passed.
    ("Tasks together with ys", lambda: call(Tasks.from_array(X, Y), list(Y), S), TypeError,
     r"ys must be None when the tasks come as a metasp.Tasks"),
    ("list: ys missing", lambda: call(list(X), s=S), TypeError, r"ys is missing"),
    ("3-D: ys missing", lambda: call(X, s=S), TypeError, r"ys is missing"),
]

# NaN and inf, in X and in y, in both input forms: the message must say what and where.
for _form in ("list", "3-D"):
    for _name, _index in (("X", (4, 2, 3)), ("y", (4, 2))):
        for _value in (NAN, INF, -INF):
            def _make(form=_form, name=_name, index=_index, value=_value):
                Xb = changed(X, index, value) if name == "X" else X
                yb = changed(Y, index, value) if name == "y" else Y
                return call(list(Xb), list(yb), S) if form == "list" else call(Xb, yb, S)

            BAD_FIT.append((f"{_form}: {_value} in {_name}", _make, ValueError,
                            rf"^{_name} contains NaN or inf \(first at index \[{4 * M + 2}"))


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("make, error, match", params(BAD_FIT))
def test_fit_rejects(fit, make, error, match):
    args, kwargs = make()
    assert_raises_exactly(error, match, fit, *args, **kwargs)


FAST = dict(step=0.1, tol=0, max_iter=5, random_state=0)

@pytest.mark.parametrize("fit, options", [
    pytest.param(function, options, id=f"{fit_name}-{name}",
                 )
    for fit_name, function in FIT_FUNCTIONS.items()
    for name, options in [("max_iter=2**31", dict(max_iter=2**31, tol=1e-6, random_state=0)),
                          ("n_jobs=2**31", dict(FAST, n_jobs=2**31))]
])
def test_fit_integer_options_beyond_c_int(fit, options):
    """A valid Python int too large for C: the fit runs, or fails naming the option."""
    name = "max_iter" if "n_jobs" not in options else "n_jobs"
    try:
        result = fit(X, Y, S, **options)
    except ValueError as error:
        assert name in str(error)
    else:
        assert result.status in ("converged", "max_iter") and result.Theta.shape == (T, D)


X_INT, Y_INT = np.round(X).astype(np.int64), np.round(Y).astype(np.int32)
X_F32 = X.astype(np.float32)

# (id, () -> converted input, () -> the same tasks as float64 arrays)
CONVERSIONS = [
    ("integer X and y", lambda: (X_INT, Y_INT),
     lambda: (X_INT.astype(np.float64), Y_INT.astype(np.float64))),
    ("integer lists", lambda: (list(X_INT), list(Y_INT)),
     lambda: (X_INT.astype(np.float64), Y_INT.astype(np.float64))),
    ("float32 X", lambda: (X_F32, Y), lambda: (X_F32.astype(np.float64), Y)),
    ("Fortran-ordered 3-D X", lambda: (np.asfortranarray(X), Y), lambda: (X, Y)),
    ("non-contiguous 3-D X", lambda: (np.repeat(X, 2, axis=2)[:, :, ::2], Y), lambda: (X, Y)),
    ("lists of lists", lambda: ([x.tolist() for x in X], [v.tolist() for v in Y]),
     lambda: (X, Y)),
    ("tuples of arrays", lambda: (tuple(X), tuple(Y)), lambda: (X, Y)),
    ("list of X with 2-D array y", lambda: (list(X), Y), lambda: (X, Y)),
    ("nested list 3-D y", lambda: (X, Y.tolist()), lambda: (X, Y)),
]


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("converted, exact", params(CONVERSIONS))
def test_fit_accepts_conversions(fit, converted, exact):
    result = fit(*converted(), S, **FAST)
    expected = fit(*exact(), S, **FAST)
    assert result.Theta.dtype == np.float64 and result.Theta.shape == (T, D)
    assert result.n_iter == expected.n_iter == 5
    assert np.abs(expected.Theta).max() > 0
    np.testing.assert_allclose(result.Theta, expected.Theta, rtol=1e-10)


# (id, () -> Tasks(...), exception, regex)
BAD_TASKS = [
    ("offsets not starting at 0", lambda: Tasks(X_FLAT, Y_FLAT, changed(OFFSETS, 0, 1)),
     ValueError, r"offsets must start at 0 and end at N = 160; got 1 and 160"),
    ("offsets ending before N", lambda: Tasks(X_FLAT, Y_FLAT, changed(OFFSETS, -1, N - 1)),
     ValueError, r"offsets must start at 0 and end at N = 160; got 0 and 159"),
    ("offsets ending after N", lambda: Tasks(X_FLAT, Y_FLAT, changed(OFFSETS, -1, N + 1)),
     ValueError, r"end at N = 160; got 0 and 161"),
    ("repeated offset (an empty task)", lambda: Tasks(X_FLAT, Y_FLAT, changed(OFFSETS, 3, 16)),
     ValueError, r"task 2 has no samples \(offsets must increase strictly\)"),
    ("decreasing offsets", lambda: Tasks(X_FLAT, Y_FLAT, changed(OFFSETS, 3, 10)),
     ValueError, r"task 2 has no samples \(offsets must increase strictly\)"),
    ("float offsets", lambda: Tasks(X_FLAT, Y_FLAT, OFFSETS.astype(float)), TypeError,
     r"offsets must be a 1-D integer array; got dtype float64"),
    pytest.param(
        lambda: Tasks(X_FLAT, Y_FLAT, OFFSETS[None, :]), ValueError, r"offsets must be a 1-D",
        id="2-D offsets"),
    ("a single offset", lambda: Tasks(X_FLAT, Y_FLAT, [0]), ValueError, r"there are no tasks"),
    ("X 1-D", lambda: Tasks(Y_FLAT, Y_FLAT, OFFSETS), ValueError, r"X must be 2-D"),
    ("y 2-D", lambda: Tasks(X_FLAT, Y, OFFSETS), ValueError, r"y must be 1-D"),
    ("X and y lengths differ", lambda: Tasks(X_FLAT, Y_FLAT[:-1], OFFSETS), ValueError,
     r"X has 160 rows but y has 159 entries"),
    ("NaN in X", lambda: Tasks(changed(X_FLAT, (5, 1), NAN), Y_FLAT, OFFSETS), ValueError,
     r"X contains NaN or inf \(first at index \[5, 1\]\)"),
    ("labels of the wrong length", lambda: Tasks(X_FLAT, Y_FLAT, OFFSETS, labels=range(T - 1)),
     ValueError, r"labels must have one entry per task \(20\)"),
    ("from_groups: fewer groups than rows",
     lambda: Tasks.from_groups(X_FLAT, Y_FLAT, np.repeat(np.arange(T), M)[:-1]), ValueError,
     r"same number of rows; got 160, 160 and 159"),
    ("from_groups: fewer targets than rows",
     lambda: Tasks.from_groups(X_FLAT, Y_FLAT[:-1], np.repeat(np.arange(T), M)), ValueError,
     r"same number of rows; got 160, 159 and 160"),
    ("from_groups: 2-D groups",
     lambda: Tasks.from_groups(X_FLAT, Y_FLAT, np.repeat(np.arange(T), M)[:, None]), ValueError,
     r"y and groups must be 1-D"),
    ("from_groups: no rows", lambda: Tasks.from_groups(X_FLAT[:0], Y_FLAT[:0], []), ValueError,
     r"there are no tasks"),
    ("from_list given arrays", lambda: Tasks.from_list(X, Y), TypeError,
     r"from_list expects"),
]


@pytest.mark.parametrize("make, error, match", params(BAD_TASKS))
def test_tasks_rejects(make, error, match):
    assert_raises_exactly(error, match, make)


@pytest.fixture(scope="module")
def fitted():
    return metasp.fit(X, Y, S, **FAST)


X_NEW, Y_NEW = X[0], Y[0]

# (id, (result) -> None, exception, regex)
BAD_ADAPT = [
    ("adapt: X with d-1 columns", lambda r: r.adapt(X_NEW[:, :-1], Y_NEW), ValueError,
     r"X must be 2-D with d = 10 columns; got shape \(8, 9\)"),
    ("adapt: 1-D X", lambda r: r.adapt(X_NEW[0], Y_NEW[:1]), ValueError,
     r"X must be 2-D with d = 10 columns"),
    ("adapt: y too short", lambda r: r.adapt(X_NEW, Y_NEW[:-1]), ValueError,
     r"y must have shape \(8,\) to match X; got \(7,\)"),
    ("adapt: 2-D y", lambda r: r.adapt(X_NEW, Y_NEW[:, None]), ValueError,
     r"y must have shape \(8,\)"),
    ("adapt: NaN in X", lambda r: r.adapt(changed(X_NEW, (1, 2), NAN), Y_NEW), ValueError,
     r"X contains NaN or inf"),
    ("adapt: inf in y", lambda r: r.adapt(X_NEW, changed(Y_NEW, 3, INF)), ValueError,
     r"y contains NaN or inf"),
    ("adapt: no samples", lambda r: r.adapt(X_NEW[:0], Y_NEW[:0]), ValueError, r"no samples"),
    *[(f"adapt: ridge={ridge!r}", lambda r, ridge=ridge: r.adapt(X_NEW, Y_NEW, ridge=ridge),
       ValueError, r"ridge must be a non-negative finite number") for ridge in (-1e-3, NAN, INF,
                                                                                  True)],
    ("adapt: string X", lambda r: r.adapt(X_NEW.astype(str), Y_NEW), TypeError, r"not numeric"),
    ("predict: X with d+1 columns", lambda r: r.predict(np.hstack([X_NEW, X_NEW[:, :1]]), [1, 2]),
     ValueError, r"X must be 2-D with d = 10 columns; got shape \(8, 11\)"),
    ("predict: NaN in X", lambda r: r.predict(changed(X_NEW, (0, 0), NAN), [1, 2]), ValueError,
     r"X contains NaN or inf"),
    ("predict: w of length s+1", lambda r: r.predict(X_NEW, [1, 2, 3]), ValueError,
     r"w must have shape \(2,\); got \(3,\)"),
    ("predict: 2-D w", lambda r: r.predict(X_NEW, r.W[:1]), ValueError,
     r"w must have shape \(2,\); got \(1, 2\)"),
    ("predict: complex w", lambda r: r.predict(X_NEW, [1j, 2]), TypeError, r"complex"),
]


@pytest.mark.parametrize("use, error, match", params(BAD_ADAPT))
def test_result_rejects(fitted, use, error, match):
    assert_raises_exactly(error, match, use, fitted)


BAD_HELPERS = [
    ("sin_angle: different d", lambda: metasp.metrics.sin_angle(B_TRUE, B_TRUE[:, :-1]),
     ValueError, r"B2 must have d = 10 columns"),
    ("subspace_distance: different d",
     lambda: metasp.metrics.subspace_distance(B_TRUE[:, 1:], B_TRUE), ValueError,
     r"B_star must have d = 9 columns"),
    ("make_hps: s > d", lambda: metasp.datasets.make_hps(T=5, m=4, d=3, s=4), ValueError,
     r"rank s = 4 cannot exceed the number of features d = 3"),
    ("make_hps: T = 0", lambda: metasp.datasets.make_hps(T=0, m=4, d=3, s=1), ValueError,
     r"T must be at least 1"),
    ("make_hps: float m", lambda: metasp.datasets.make_hps(T=5, m=4.0, d=3, s=1), TypeError,
     r"m must be an integer"),
]


@pytest.mark.parametrize("make, error, match", params(BAD_HELPERS))
def test_helpers_reject(make, error, match):
    assert_raises_exactly(error, match, make)


def unaligned(array, dtype=np.float64):
    """A copy of ``array`` whose data start one byte into a buffer: not aligned for ``dtype``,
    as NumPy views of raw buffers (np.frombuffer with an offset) can be."""
    array = np.asarray(array, dtype=dtype)
    buffer = np.zeros(array.nbytes + 1, np.uint8)
    out = np.ndarray(array.shape, dtype, buffer=buffer, offset=1)
    out[...] = array
    assert not out.flags.aligned
    return out


# Unaligned float64 data work at every entry point (one deliberate copy), never ending in
# pybind11's "incompatible function arguments" signature dump.
UNALIGNED_CALLS = {
    "fit": lambda X, y: metasp.fit(X, y, S, random_state=0),
    "fit heads=fixed": lambda X, y: metasp.fit(X, y, S, heads="fixed", random_state=0),
    "reference.fit": lambda X, y: metasp.reference.fit(X, y, S, random_state=0),
    "polish": lambda X, y: metasp.polish(X, y, B_TRUE),
    "fit on Tasks": lambda X, y: metasp.fit(Tasks.from_array(X, y), s=S, random_state=0),
    "kernels.gradient": lambda X, y: metasp.kernels.gradient(
        Tasks.from_array(X, y), unaligned(np.ones((T, D))), subspace=unaligned(B_TRUE.T)),
    "kernels.curvature": lambda X, y: metasp.kernels.curvature(
        Tasks.from_array(X, y), unaligned(np.ones((T, S))), unaligned(B_TRUE.T)),
    "kernels.task_statistics": lambda X, y: metasp.kernels.task_statistics(
        Tasks.from_array(X, y), unaligned(B_TRUE), heads=unaligned(np.ones((T, S)))),
    "kernels.marginal_pass": lambda X, y: metasp.kernels.marginal_pass(
        Tasks.from_array(X, y), unaligned(B_TRUE.T), 0.5),
    "kernels.truncated_svd": lambda X, y: metasp.kernels.truncated_svd(
        X.reshape(T, -1), S, warm_start=unaligned(np.eye(M * D, S)), random_state=0),
}


def _same(a, b):
    if isinstance(a, tuple):
        for x, z in zip(a, b):
            _same(x, z)
    elif isinstance(a, metasp.MetaSPResult):
        np.testing.assert_array_equal(a.Theta, b.Theta)
        np.testing.assert_array_equal(a.B, b.B)
    elif a is not None and not isinstance(a, (bool, int, float)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call", UNALIGNED_CALLS.values(), ids=UNALIGNED_CALLS.keys())
def test_unaligned_arrays_work(call):
    _same(call(unaligned(X), unaligned(Y)), call(np.array(X), np.array(Y)))


# fractions.Fraction is a real number: options taking one accept it.
def test_fractions_are_real_numbers():
    from fractions import Fraction

    as_float = metasp.fit(X, Y, S, step=0.1, tol=1e-2, max_iter=1000, random_state=0)
    exact = metasp.fit(X, Y, S, step=Fraction(1, 10), tol=Fraction(1, 100), max_iter=1000,
                       random_state=0)
    np.testing.assert_array_equal(exact.Theta, as_float.Theta)
    metasp.fit(X, Y, S, reference_B=B_TRUE, sin_tol=Fraction(1, 100), random_state=0)
    tasks = Tasks.from_array(X, Y)
    U = np.linalg.qr(B_TRUE.T)[0]
    assert (metasp.kernels.marginal_pass(tasks, U, Fraction(1, 2)).deviance
            == metasp.kernels.marginal_pass(tasks, U, 0.5).deviance)
    metasp.kernels.truncated_svd(X.reshape(T, -1), S, tol=Fraction(1, 10**10))
    for bad in (Fraction(-1, 3), Fraction(10**400)):
        assert_raises_exactly(ValueError, "fixed step must be positive and finite", metasp.fit,
                              X, Y, S, step=bad)
    assert_raises_exactly(ValueError, "noise must be a positive finite number",
                          metasp.kernels.marginal_pass, tasks, U, Fraction(0))
