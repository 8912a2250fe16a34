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
