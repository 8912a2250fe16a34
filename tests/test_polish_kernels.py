"""The per-task kernels of the polish (cpp/src/heads.cpp, cpp/src/newton.cpp) on awkward shapes."""

import warnings

import numpy as np
import pytest
from conftest import DTYPES, core_polish, ragged_tasks

import metasp

S_VALUES = [1, 2, 5, 7]  # column groups of 4, 2 and 1 in the row kernels


def polish_both(Xs, ys, B, s, dtype, newton_solve):
    """Three polish sweeps in C++ (X in dtype) and in the reference (the same X in float64)."""
    Xs = [x.astype(dtype) for x in Xs]
    tasks = metasp.Tasks.from_list(Xs, ys)
    promoted = metasp.Tasks.from_list([x.astype(np.float64) for x in Xs], ys)
    start = np.linalg.qr(B.T + 0.3 * np.random.default_rng(s).standard_normal(B.T.shape))[0]
    out = core_polish(tasks, start, 3, 0.0, 1,
                       newton_solve=newton_solve)
    with warnings.catch_warnings():  # the reference's preconditioner on singular tasks
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = metasp.reference.polish_path(promoted, start, max_iter=3, tol=0,
                                                newton_solve=newton_solve)
    assert out["n_iter"] == expected["n_iter"] == 3
    assert out["n_newton"] == expected["n_newton"] > 0
    return out, expected


@pytest.mark.parametrize("s", S_VALUES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("newton_solve", ["dense", "cg"])
def test_polish_kernels_match_reference(s, dtype, newton_solve):
    """d = 23 (not a multiple of the 4- and 8-wide packs), ragged tasks down to s + 1 samples
    (some X_t V ill-conditioned enough for the heads' orthogonal decomposition)."""
    Xs, ys, B, _ = ragged_tasks(T=50, d=23, s=s, sigma=0.2, seed=s, sizes=(s + 1, 25))
    out, expected = polish_both(Xs, ys, B, s, dtype, newton_solve)
    np.testing.assert_allclose(out["Theta"], expected["Theta"], rtol=0,
                               atol=1e-11 * np.abs(expected["Theta"]).max())
    np.testing.assert_allclose(out["loss"], expected["loss"], rtol=1e-12)


@pytest.mark.parametrize("s", S_VALUES)
@pytest.mark.parametrize("newton_solve", ["dense", "cg"])
def test_polish_kernels_match_reference_on_singular_tasks(s, newton_solve):
    """Tasks with fewer samples than s (singular heads and A_t) and tasks whose rows lie near a
    subspace of dimension s // 2 (X_t V ill-conditioned for any V): the fallbacks of the
    Cholesky solves. The problem amplifies rounding here (the code before the packed kernels
    agreed with the reference to 2e-8), hence the looser tolerance."""
    Xs, ys, B, W = ragged_tasks(T=50, d=23, s=s, sigma=0.2, seed=0, sizes=(2, 25))
    rng = np.random.default_rng(100)
    for t in range(0, len(Xs), 7):
        m, k = Xs[t].shape[0], max(1, s // 2)
        Xs[t] = rng.standard_normal((m, k)) @ rng.standard_normal((k, 23))
        Xs[t] += 3e-2 * rng.standard_normal((m, 23))
        ys[t] = Xs[t] @ (W[t] @ B) + 0.2 * rng.standard_normal(m)
    out, expected = polish_both(Xs, ys, B, s, "float64", newton_solve)
    np.testing.assert_allclose(out["Theta"], expected["Theta"], rtol=0,
                               atol=1e-6 * np.abs(expected["Theta"]).max())
    np.testing.assert_allclose(out["loss"], expected["loss"], rtol=1e-8)


@pytest.mark.parametrize("s", [1, 3, 5])
def test_polish_kernels_do_not_depend_on_the_thread_count(s):
    """The heads and the Newton operator with the tasks chunked over two threads."""
    Xs, ys, B, _ = ragged_tasks(T=1500, d=30, s=s, sigma=0.2, seed=3, sizes=(2, 25))
    tasks = metasp.Tasks.from_list(Xs, ys)
    start = np.linalg.qr(B.T + 0.1 * np.random.default_rng(0).standard_normal(B.T.shape))[0]
    one, two = (core_polish(tasks, start, 3, 0.0,
                             n_threads, newton_solve="cg") for n_threads in (1, 2))
    assert one["n_iter"] == two["n_iter"] == 3
    np.testing.assert_array_equal(two["Theta"], one["Theta"])


@pytest.mark.parametrize("s", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_shard_polish_kernels_match_reference(s, dtype):
    """kernels.task_heads and kernels.basis_system_sums (ALS and Newton), the pieces of a polish
    over shards, against their NumPy twins on ragged tasks down to s + 1 samples."""
    Xs, ys, B, _ = ragged_tasks(T=40, d=11, s=s, sigma=0.2, seed=s, sizes=(s + 1, 20))
    tasks = metasp.Tasks.from_list([x.astype(dtype) for x in Xs], ys)
    promoted = metasp.Tasks.from_list([x.astype(dtype).astype(np.float64) for x in Xs], ys)
    V = np.linalg.qr(B.T + 0.3 * np.random.default_rng(s).standard_normal(B.T.shape))[0]
    W, loss = metasp.kernels.task_heads(tasks, V)
    W_ref, loss_ref = metasp.reference.task_heads(promoted, V)
    np.testing.assert_allclose(W, W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-9, atol=1e-15)
    for subspace in (None, V):
        M, rhs = metasp.kernels.basis_system_sums(tasks, W, subspace=subspace)
        M_ref, rhs_ref = metasp.reference.basis_system_sums(promoted, W, subspace=subspace)
        np.testing.assert_array_equal(M, M.T)
        scale = np.abs(M_ref).max()
        np.testing.assert_allclose(M, M_ref, rtol=0, atol=1e-11 * scale)
        np.testing.assert_allclose(rhs, rhs_ref, rtol=0, atol=1e-11 * np.abs(rhs_ref).max())


@pytest.mark.parametrize("s", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matrix_free_newton_kernels_match_the_dense_system(s, dtype):
    """kernels.newton_terms and kernels.newton_product: the right-hand side, the diagonal and
    products of the dense Newton system, never formed; their sums over tasks add up."""
    Xs, ys, B, _ = ragged_tasks(T=40, d=11, s=s, sigma=0.2, seed=s, sizes=(s + 1, 20))
    tasks = metasp.Tasks.from_list([x.astype(dtype) for x in Xs], ys)
    promoted = metasp.Tasks.from_list([x.astype(dtype).astype(np.float64) for x in Xs], ys)
    V = np.linalg.qr(B.T + 0.3 * np.random.default_rng(s).standard_normal(B.T.shape))[0]
    W = metasp.kernels.task_heads(tasks, V).W
    D = np.random.default_rng(1).standard_normal(V.shape)
    rhs, diagonal = metasp.kernels.newton_terms(tasks, W, V)
    rhs_ref, diagonal_ref = metasp.reference.newton_terms(promoted, W, V)
    np.testing.assert_allclose(rhs, rhs_ref, rtol=0, atol=1e-11 * np.abs(rhs_ref).max())
    np.testing.assert_allclose(diagonal, diagonal_ref, rtol=1e-10)
    product = metasp.kernels.newton_product(tasks, W, V, D)
    expected = metasp.reference.newton_product(promoted, W, V, D)
    np.testing.assert_allclose(product, expected, rtol=0, atol=1e-11 * np.abs(expected).max())
    halves = [np.arange(0, 17), np.arange(17, 40)]
    parts = [metasp.kernels.newton_product(tasks.subset(h), W[h], V, D) for h in halves]
    np.testing.assert_allclose(parts[0] + parts[1], product, rtol=0,
                               atol=1e-13 * np.abs(product).max())


def test_basis_system_sums_add_up_over_disjoint_tasks():
    Xs, ys, B, _ = ragged_tasks(T=30, d=9, s=2, sigma=0.1, seed=3, sizes=(4, 15))
    tasks = metasp.Tasks.from_list(Xs, ys)
    V = np.linalg.qr(B.T)[0]
    W = metasp.kernels.task_heads(tasks, V).W
    halves = [np.arange(0, 13), np.arange(13, 30)]
    for subspace in (None, V):
        whole = metasp.kernels.basis_system_sums(tasks, W, subspace=subspace)
        parts = [metasp.kernels.basis_system_sums(tasks.subset(h), W[h], subspace=subspace)
                 for h in halves]
        for k in range(2):
            np.testing.assert_allclose(parts[0][k] + parts[1][k], whole[k], rtol=1e-12,
                                       atol=1e-14 * np.abs(whole[k]).max())


def test_shard_polish_kernels_refuse_bad_shapes():
    Xs, ys, B, _ = ragged_tasks(T=10, d=6, s=2, sigma=0.1, seed=0, sizes=(3, 8))
    tasks = metasp.Tasks.from_list(Xs, ys)
    V = np.linalg.qr(B.T)[0]
    with pytest.raises(ValueError, match=r"V must have shape \(d, k\)"):
        metasp.kernels.task_heads(tasks, V[:5])
    with pytest.raises(ValueError, match=r"W must have shape \(T, s\)"):
        metasp.kernels.basis_system_sums(tasks, np.ones((9, 2)))
    with pytest.raises(ValueError, match="subspace must have shape"):
        metasp.kernels.basis_system_sums(tasks, np.ones((10, 2)), subspace=V[:, :1])
    with pytest.raises(ValueError, match="NaN or inf|finite"):
        metasp.kernels.basis_system_sums(tasks, np.full((10, 2), np.nan))
    wide = metasp.Tasks.from_list([np.ones((3, 1001))], [np.ones(3)])
    with pytest.raises(ValueError, match="above 2000"):
        metasp.kernels.basis_system_sums(wide, np.ones((1, 2)))
    with pytest.raises(ValueError):  # the binding's own check, for callers of _core
        metasp._core.basis_system_sums(*metasp.kernels.core_arrays(wide), np.ones((1, 2)),
                                       None, 1)
