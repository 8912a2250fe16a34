import numpy as np
import pytest

import metasp
from metasp import _core


@pytest.fixture
def noiseless():
    """Well-posed noiseless problem: m = 15 is about 4 times the information limit."""
    return metasp.datasets.make_hps(T=200, m=15, d=50, s=3, random_state=0)


def ragged_tasks(T=60, d=20, s=3, sigma=0.05, seed=1, sizes=(4, 30)):
    """Tasks of sizes[0] to sizes[1] samples each from the hard-parameter-sharing model."""
    rng = np.random.default_rng(seed)
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    W = rng.standard_normal((T, s))
    Xs, ys = [], []
    for t in range(T):
        X = rng.standard_normal((int(rng.integers(sizes[0], sizes[1] + 1)), d))
        Xs.append(X)
        ys.append(X @ (W[t] @ B) + sigma * rng.standard_normal(X.shape[0]))
    return Xs, ys, B, W


# float32 X is read as it is by the C++ core, which computes in float64: it must agree with the
# reference run on the same data promoted to float64 as closely as float64 X does.
DTYPES = ["float64", "float32"]


def with_dtype(X, dtype):
    """``X`` (an array, or a list of per-task arrays) converted to ``dtype``."""
    if isinstance(X, list):
        return [x.astype(dtype) for x in X]
    return X.astype(dtype)


@pytest.fixture
def strict_svd(monkeypatch):
    """Trajectory comparisons need every truncated SVD to SVD_TOL, not relative to the step."""
    monkeypatch.setattr(metasp._solver, "SVD_RELATIVE_TOL", 0.0)


def core_polish(tasks, start, max_iter, tol, n_threads=1, *, newton=True, newton_solve="auto",
                max_dense=None):
    """_core.polish from span(start) with PolishOptions set from the arguments."""
    options = _core.PolishOptions()
    options.max_iter, options.tol, options.n_threads = max_iter, tol, n_threads
    options.newton = newton
    options.basis.newton_solve = newton_solve
    if max_dense is not None:
        options.basis.max_dense = max_dense
    return _core.polish(tasks.X, tasks.y, tasks.offsets, np.asfortranarray(start), options)
