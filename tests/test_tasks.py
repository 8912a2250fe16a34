"""The stacked task layout: conversions, and no copies where none are needed."""

import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import metasp
from metasp import Tasks


def test_stacked_float64_is_never_copied():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((100, 4)), rng.standard_normal(100)
    tasks = Tasks(X, y, np.arange(0, 101, 10))
    assert tasks.X is X and tasks.y is y
    assert Tasks.from_groups(X, y, np.repeat(np.arange(10), 10)).X is X


def test_contiguous_3d_input_is_a_view():
    X, y, _, _ = metasp.datasets.make_hps(T=10, m=5, d=3, s=1, random_state=0)
    tasks = Tasks.from_array(X, y)
    assert np.shares_memory(tasks.X, X) and np.shares_memory(tasks.y, y)
    assert tasks.n_tasks == 10 and tasks.n_features == 3 and tasks.task_sizes.tolist() == [5] * 10


def test_fit_reads_x_in_place():
    X, y, _, _ = metasp.datasets.make_hps(T=1000, m=40, d=50, s=3, random_state=0)  # 16 MB
    tasks = Tasks.from_array(X, y)
    tracemalloc.start()
    try:
        metasp.fit(tasks, s=3, max_iter=3, tol=0, n_jobs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A copy of X would be 16 MB; a (T, d) buffer is X.nbytes / 40 and a fit keeps a few.
    assert peak < X.nbytes / 8
    # The binding refuses layouts it would have to copy, rather than copying silently.
    with pytest.raises(TypeError):
        metasp._core.task_gradient(np.asfortranarray(tasks.X), tasks.y, tasks.offsets,
                                   np.zeros((2000, 50)), 1)


def test_float32_is_kept_and_never_copied():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((100, 4)).astype(np.float32), rng.standard_normal(100)
    tasks = Tasks(X, y, np.arange(0, 101, 10))
    assert tasks.X is X and tasks.X.dtype == np.float32 and tasks.y.dtype == np.float64
    assert Tasks.from_groups(X, y, np.repeat(np.arange(10), 10)).X is X
    X3 = X.reshape(10, 10, 4)
    assert np.shares_memory(Tasks.from_array(X3, y.reshape(10, 10)).X, X3)
    assert tasks.subset([3, 1]).X.dtype == np.float32
    # Per-task float32 arrays stack into float32; any other dtype among them gives float64.
    parts = [X[:30], X[30:]]
    assert Tasks.from_list(parts, [y[:30], y[30:]]).X.dtype == np.float32
    assert Tasks.from_list([parts[0], parts[1].astype(np.float64)],
                           [y[:30], y[30:]]).X.dtype == np.float64
    # Non-contiguous float32 is made contiguous, still float32.
    strided = np.repeat(X, 2, axis=1)[:, ::2]
    assert Tasks(strided, y, [0, 100]).X.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, "float32", np.dtype(np.float64), None])
def test_dtype_option_converts_on_purpose(dtype):
    X = np.arange(24, dtype=np.int32).reshape(6, 4)
    tasks = Tasks(X, np.ones(6), [0, 2, 6], dtype=dtype)
    assert tasks.X.dtype == (np.float64 if dtype is None else np.dtype(dtype))
    assert tasks.X.flags.c_contiguous
    np.testing.assert_array_equal(tasks.X, X)
    X32 = X.astype(np.float32)
    assert Tasks(X32, np.ones(6), [0, 2, 6], dtype=dtype).X.dtype == (
        np.float32 if dtype is None else np.dtype(dtype))
    converted = metasp._tasks.as_tasks(Tasks(X32, np.ones(6), [0, 2, 6]), dtype=dtype)
    assert converted.X.dtype == (np.float32 if dtype is None else np.dtype(dtype))


@pytest.mark.parametrize("dtype, error", [(np.float16, ValueError), (np.int64, ValueError),
                                          ("not a dtype", TypeError)])
def test_dtype_option_refuses_other_dtypes(dtype, error):
    with pytest.raises(error, match="dtype must be None, numpy.float32 or numpy.float64"):
        Tasks(np.ones((4, 2)), np.ones(4), [0, 4], dtype=dtype)


def test_float32_conversion_checks_the_range():
    with pytest.raises(ValueError, match="beyond the range of float32"):
        Tasks(np.full((4, 2), 1e300), np.ones(4), [0, 4], dtype=np.float32)


def test_fit_reads_float32_x_in_place():
    X, y, _, _ = metasp.datasets.make_hps(T=1000, m=40, d=50, s=3, random_state=0)
    tasks = Tasks.from_array(X, y, dtype=np.float32)  # 8 MB; in float64 it would be 16 MB
    tracemalloc.start()
    try:
        metasp.fit(tasks, s=3, max_iter=3, tol=0, n_jobs=1)
        metasp.fit(tasks, s=3, max_iter=3, tol=0, n_jobs=1, accel=None, init="spectral")
        metasp.polish(tasks, B=np.eye(3, 50), max_iter=2, tol=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # No copy of X in either dtype: a float32 copy would be X.nbytes, a float64 one twice that.
    assert peak < tasks.X.nbytes / 4


FIT_MEMORY_SCRIPT = """
import resource, sys
import numpy as np
import metasp
T, m, d = 5000, 40, 50
X = np.random.default_rng(0).standard_normal((T * m, d), dtype=np.float32)  # 40 MB
y = X[:, 0].astype(np.float64)
tasks = metasp.Tasks(X, y, np.arange(T + 1) * m)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
metasp.fit(tasks, s=3, max_iter=2, tol=0, n_jobs=1, accel=None, polish=None)
metasp.fit(tasks, s=3, max_iter=2, tol=0, n_jobs=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("growth", (after - before) * 1024 / X.nbytes)
"""


def test_cpp_core_reads_float32_x_in_place():
    """Peak resident memory of whole fits (C++ included, which tracemalloc does not see)."""
    out = subprocess.run([sys.executable, "-c", FIT_MEMORY_SCRIPT], check=True,
                         capture_output=True, text=True).stdout
    growth = float(out.split("growth")[-1].split()[0])
    # A float64 copy of X would add 2 X.nbytes and a float32 one X.nbytes; the fit's (T, d)
    # float64 buffers are X.nbytes / 20 each.
    assert growth < 0.9


def test_conversion_happens_once_and_on_purpose():
    X = np.arange(24, dtype=np.int32).reshape(6, 4)
    tasks = Tasks(X, np.ones(6, dtype=np.float32), [0, 2, 6])
    assert tasks.X.dtype == np.float64 and tasks.X.flags.c_contiguous
    assert tasks.y.dtype == np.float64
    np.testing.assert_array_equal(tasks.X, X)


def test_from_list_and_indexing():
    rng = np.random.default_rng(1)
    Xs = [rng.standard_normal((m, 3)) for m in (2, 5, 1)]
    ys = [rng.standard_normal(m) for m in (2, 5, 1)]
    tasks = Tasks.from_list(Xs, ys)
    assert len(tasks) == 3 and tasks.n_samples == 8
    assert tasks.offsets.tolist() == [0, 2, 7, 8]
    for t in range(3):
        np.testing.assert_array_equal(tasks[t][0], Xs[t])
        np.testing.assert_array_equal(tasks[t][1], ys[t])
    np.testing.assert_array_equal(tasks[-1][1], ys[2])
    assert "n_tasks=3" in repr(tasks)


def test_from_groups_sorts_rows_by_label():
    X = np.arange(12.0).reshape(6, 2)
    y = np.arange(6.0)
    groups = np.array(["b", "a", "b", "c", "a", "b"])
    tasks = Tasks.from_groups(X, y, groups)
    assert tasks.labels.tolist() == ["a", "b", "c"]
    assert tasks.task_sizes.tolist() == [2, 3, 1]
    np.testing.assert_array_equal(tasks[0][1], [1.0, 4.0])  # stable: original order kept
    np.testing.assert_array_equal(tasks[1][1], [0.0, 2.0, 5.0])
    np.testing.assert_array_equal(tasks[1][0], X[[0, 2, 5]])


def test_all_input_forms_give_the_same_fit():
    X, y, _, _ = metasp.datasets.make_hps(T=30, m=6, d=8, s=2, random_state=0)
    options = dict(step=0.1, tol=0, max_iter=5, random_state=0)
    expected = metasp.fit(X, y, 2, **options).Theta
    forms = [
        (list(X), list(y)),
        (tuple(X), tuple(y)),
        (Tasks.from_array(X, y), None),
        (Tasks.from_groups(X.reshape(-1, 8), y.ravel(), np.repeat(np.arange(30), 6)), None),
    ]
    for Xs, ys in forms:
        np.testing.assert_allclose(metasp.fit(Xs, ys, 2, **options).Theta, expected, rtol=1e-13)


@pytest.mark.parametrize("groups", [
    np.array([0.0, np.nan, 1.0, np.nan]),
    np.array(["a", None, "a", "b"], dtype=object),
    np.array([1, np.nan, 1, 2], dtype=object),
    np.array(["2024-01-01", "NaT", "2024-01-01", "2024-01-02"], dtype="datetime64[D]"),
    np.array([None, None, None, None]),
], ids=["float NaN", "None among str", "NaN among int objects", "NaT", "all None"])
def test_from_groups_refuses_missing_labels(groups):
    X, y = np.ones((4, 2)), np.ones(4)
    with pytest.raises(ValueError, match=r"groups has \d missing label\(s\) \(NaN, None or NaT; "
                                         r"first at row [01]\); every row needs a task label"):
        Tasks.from_groups(X, y, groups)


def test_from_groups_refuses_pandas_na():
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match=r"1 missing label\(s\).*first at row 2"):
        Tasks.from_groups(np.ones((4, 2)), np.ones(4), pd.array(["a", "b", pd.NA, "b"]))
    with pytest.raises(ValueError, match=r"1 missing label\(s\).*first at row 1"):
        Tasks.from_groups(np.ones((4, 2)), np.ones(4), pd.Series([1.0, None, 2.0, 2.0]))


def test_from_groups_names_labels_of_mixed_types():
    groups = np.array([1, "a", 1, "b"], dtype=object)
    with pytest.raises(TypeError, match=r"groups mixes labels of types \['int', 'str'\], which "
                                        r"cannot be sorted together.*astype\(str\)"):
        Tasks.from_groups(np.ones((4, 2)), np.ones(4), groups)
    # The fix the message suggests works.
    tasks = Tasks.from_groups(np.ones((4, 2)), np.ones(4), groups.astype(str))
    assert tasks.labels.tolist() == ["1", "a", "b"]
    # Numbers of different types still sort together.
    mixed_numbers = np.array([1, 2.5, 1, True], dtype=object)
    assert Tasks.from_groups(np.ones((4, 2)), np.ones(4), mixed_numbers).n_tasks == 2


def test_object_arrays_of_numbers_are_read_as_float64():
    X = np.array([[1, 2.5], [True, np.float32(0.5)], [3, 4]], dtype=object)
    y = np.array([1, 2.0, np.int8(3)], dtype=object)
    tasks = Tasks.from_groups(X, y, [0, 0, 1])
    assert tasks.X.dtype == np.float64 and tasks.y.dtype == np.float64
    np.testing.assert_array_equal(tasks.X, [[1.0, 2.5], [1.0, 0.5], [3.0, 4.0]])
    np.testing.assert_array_equal(tasks.y, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(Tasks(X, y, [0, 3]).X, tasks.X)


@pytest.mark.parametrize("entry, shown", [(None, "None (a NoneType)"), ("1.5", "'1.5' (a str)"),
                                          ({"a": 1}, "{'a': 1} (a dict)")])
def test_object_arrays_with_other_entries_are_refused(entry, shown):
    X = np.ones((3, 2), dtype=object)
    X[2, 1] = entry
    with pytest.raises(TypeError, match=r"X has dtype object, which is not numeric: its entry at "
                                        rf"\[2, 1\] is {re.escape(shown)}\. .*real numbers only"):
        Tasks.from_groups(X, np.ones(3), [0, 0, 1])


def test_sparse_input_is_refused_with_the_fix():
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.csr_matrix(np.eye(4))
    with pytest.raises(TypeError, match=r"X is a sparse csr_matrix; metasp needs dense data: "
                                        r"pass X\.toarray\(\)"):
        Tasks.from_groups(X, np.ones(4), [0, 0, 1, 1])
    with pytest.raises(TypeError, match="sparse"):
        Tasks(X, np.ones(4), [0, 4])
