"""The per-task kernels against the NumPy reference."""

import numpy as np
import pytest
from conftest import DTYPES, ragged_tasks, with_dtype

import metasp
from metasp import kernels, reference


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_and_curvature_match_reference(dtype):
    Xs, ys, _, _ = ragged_tasks(T=50, d=12)
    tasks = metasp.Tasks.from_list(with_dtype(Xs, dtype), ys)
    assert tasks.X.dtype == dtype
    rng = np.random.default_rng(0)
    Theta = rng.standard_normal((50, 12))
    G, loss, _, _ = kernels.gradient(tasks, Theta)
    # The reference on the same values in float64 (NumPy would promote them anyway).
    tasks_ref = metasp.Tasks(tasks.X.astype(np.float64), tasks.y, tasks.offsets)
    G_ref, loss_ref, _, _ = reference.gradient(tasks_ref, Theta)
    np.testing.assert_allclose(G, G_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    # Spelled out for one task.
    X, y = tasks[7]
    residual = y - X @ Theta[7]
    np.testing.assert_allclose(G[7], X.T @ residual / len(y), rtol=1e-12)
    np.testing.assert_allclose(loss[7], residual @ residual / len(y), rtol=1e-12)

    C, B = rng.standard_normal((50, 3)), np.linalg.qr(rng.standard_normal((12, 3)))[0]
    curvature = kernels.curvature(tasks, C, B)
    np.testing.assert_allclose(curvature, reference.curvature(tasks_ref, C, B), rtol=1e-12)
    np.testing.assert_allclose(curvature[7], np.sum((X @ (B @ C[7])) ** 2) / len(y), rtol=1e-12)

    # The fused pass: the same gradient, plus the adaptive step's sums along V V^T G[t].
    fused = kernels.gradient(tasks, Theta, subspace=B)
    np.testing.assert_array_equal(fused.G, G)
    expected = reference.gradient(tasks_ref, Theta, subspace=B)
    np.testing.assert_allclose(fused.projected, expected.projected, rtol=1e-12)
    np.testing.assert_allclose(fused.curvature, expected.curvature, rtol=1e-12)
    p = B @ (B.T @ G[7])
    np.testing.assert_allclose(fused.projected[7], p @ p, rtol=1e-12)
    np.testing.assert_allclose(fused.curvature[7], np.sum((X @ p) ** 2) / len(y), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_tasks_cross_row_blocks(dtype):
    # Tasks longer than the kernel's 256-row blocks.
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((1500, 5)).astype(dtype), rng.standard_normal(1500)
    tasks = metasp.Tasks(X, y, [0, 700, 1500])
    Theta = rng.standard_normal((2, 5))
    G, loss, _, _ = kernels.gradient(tasks, Theta)
    G_ref, loss_ref, _, _ = reference.gradient(metasp.Tasks(X.astype(np.float64), y, tasks.offsets),
                                               Theta)
    np.testing.assert_allclose(G, G_ref, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 3, 7, 9, 17])
def test_every_block_shape(dtype, d):
    # Task sizes 1..19 and s = 7 cover every split of the rows (and of V's columns) into the
    # kernels' blocks of 8, 4, 2 and 1; d below, at and between multiples of the 4-wide packs.
    rng = np.random.default_rng(d)
    sizes = np.arange(1, 20)
    X = rng.standard_normal((sizes.sum(), d)).astype(dtype)
    y = rng.standard_normal(sizes.sum())
    tasks = metasp.Tasks(X, y, np.concatenate([[0], np.cumsum(sizes)]))
    Theta = rng.standard_normal((len(sizes), d))
    V = np.linalg.qr(rng.standard_normal((d, min(d, 7))))[0]
    fused = kernels.gradient(tasks, Theta, subspace=V)
    expected = reference.gradient(metasp.Tasks(X.astype(np.float64), y, tasks.offsets), Theta,
                                  subspace=V)
    for name in ("G", "task_loss", "projected", "curvature"):
        np.testing.assert_allclose(getattr(fused, name), getattr(expected, name), rtol=1e-12,
                                   atol=1e-14, err_msg=name)


def _tasks_of_sizes(sizes, d, dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((sum(sizes), d)).astype(dtype)
    y = rng.standard_normal(sum(sizes))
    return metasp.Tasks(X, y, np.concatenate([[0], np.cumsum(sizes)]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d, s", [(1, 1), (3, 2), (7, 3), (9, 5), (17, 7), (17, 9)])
def test_task_statistics_match_reference(dtype, d, s):
    # Task sizes 1..19 split the rows every way into the kernel's blocks of 4, 2 and 1; odd s
    # leaves a single column after the pairs; d below, at and between the 4-wide packs.
    tasks = _tasks_of_sizes(list(range(1, 20)), d, dtype, seed=d + s)
    tasks_ref = metasp.Tasks(tasks.X.astype(np.float64), tasks.y, tasks.offsets)
    rng = np.random.default_rng(s)
    B = rng.standard_normal((s, d))  # any rows, not only orthonormal ones
    heads = rng.standard_normal((tasks.n_tasks, s))
    out = kernels.task_statistics(tasks, B, heads=heads)
    expected = reference.task_statistics(tasks_ref, B, heads=heads)
    for name in ("gram", "cross", "squares", "G"):
        np.testing.assert_allclose(getattr(out, name), getattr(expected, name), rtol=1e-12,
                                   atol=1e-13, err_msg=name)
    # Spelled out for one task, and G as the gradient pass computes it.
    X, y = tasks_ref[11]
    Z = X @ B.T
    np.testing.assert_allclose(out.gram[11], Z.T @ Z, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out.cross[11], Z.T @ y, rtol=1e-12, atol=1e-13)
    assert out.squares[11] == pytest.approx(y @ y, rel=1e-14)
    np.testing.assert_array_equal(out.gram, np.swapaxes(out.gram, 1, 2))
    np.testing.assert_allclose(out.G, kernels.gradient(tasks, heads @ B).G, rtol=1e-11,
                               atol=1e-13)
    # Without heads: the same statistics, no gradient.
    plain = kernels.task_statistics(tasks, B)
    assert plain.G is None
    for name in ("gram", "cross", "squares"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(out, name))


def test_task_statistics_do_not_depend_on_the_thread_count():
    # Enough multiply-adds (N d (s + 1) > 2^20) for the pass to run in parallel.
    tasks = _tasks_of_sizes([20] * 400, 30, np.float64, seed=0)
    rng = np.random.default_rng(1)
    B, heads = rng.standard_normal((5, 30)), rng.standard_normal((400, 5))
    one = kernels.task_statistics(tasks, B, heads=heads, n_jobs=1)
    two = kernels.task_statistics(tasks, B, heads=heads, n_jobs=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_task_statistics_reject_bad_input():
    tasks = _tasks_of_sizes([3, 4], 5, np.float64, seed=0)
    B = np.ones((2, 5))
    with pytest.raises(TypeError, match="metasp.Tasks"):
        kernels.task_statistics((tasks.X, tasks.y), B)
    with pytest.raises(ValueError, match=r"B must have shape \(s, d\) with 1 <= s <= d = 5"):
        kernels.task_statistics(tasks, B.T)
    with pytest.raises(ValueError, match=r"B must have shape \(s, d\)"):
        kernels.task_statistics(tasks, np.ones((0, 5)))
    with pytest.raises(ValueError, match="B"):
        kernels.task_statistics(tasks, np.full((2, 5), np.nan))
    with pytest.raises(ValueError, match=r"heads must have shape \(2, 2\)"):
        kernels.task_statistics(tasks, B, heads=np.ones((2, 3)))
    with pytest.raises(ValueError, match="n_jobs"):
        kernels.task_statistics(tasks, B, n_jobs=0)


# No kernel returns NaN or inf: on data whose products leave the float64 range each either
# returns finite arrays or raises FloatingPointError naming the kernel and what overflowed.
def _extreme_tasks(scale):
    Xs, ys, _, _ = ragged_tasks(T=30, d=8)
    return metasp.Tasks.from_list([x * scale for x in Xs], [v * scale for v in ys])


KERNEL_CALLS = {
    "gradient": lambda t, U: kernels.gradient(t, np.ones((t.n_tasks, t.n_features)),
                                              subspace=U),
    "curvature": lambda t, U: kernels.curvature(t, np.ones((t.n_tasks, 2)), U),
    "task_statistics": lambda t, U: kernels.task_statistics(t, U.T,
                                                            heads=np.ones((t.n_tasks, 2))),
    "marginal_pass": lambda t, U: kernels.marginal_pass(t, U, 0.5),
}


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e160, 1e300])
@pytest.mark.parametrize("kernel", KERNEL_CALLS.values(), ids=KERNEL_CALLS.keys())
def test_kernels_never_return_nan(kernel, scale):
    tasks = _extreme_tasks(scale)
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 2)))[0]
    try:
        out = kernel(tasks, U)
    except FloatingPointError as error:
        assert "overflowed the float64 range" in str(error) and "kernels." in str(error)
        return
    for value in (out if isinstance(out, tuple) else (out,)):
        if value is not None and np.ndim(value):
            assert np.isfinite(value).all()


def test_marginal_pass_beyond_float64_is_undefined_not_nan():
    tasks = _extreme_tasks(1e300)
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 2)))[0]
    out = kernels.marginal_pass(tasks, U * 1e10, 0.5)
    assert out.deviance == np.inf
    for array in (out.gradient, out.heads, out.task_loss):
        np.testing.assert_array_equal(array, 0)


def test_gradient_overflow_names_the_kernel():
    tasks = _extreme_tasks(1e200)
    with pytest.raises(FloatingPointError, match=r"kernels.gradient: G.* overflowed the "
                                                 r"float64 range \(largest \|entry\|: X "):
        kernels.gradient(tasks, np.full((30, 8), 1e200))
