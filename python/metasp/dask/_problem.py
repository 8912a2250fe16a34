"""The fixed-heads solver and the least-squares polish over shards: the problem of
:mod:`metasp._hard_thresholding` and :mod:`metasp._polish` with every (T, k) row block (the
iterate, the gradient, the directions, the heads) kept on the workers, beside its tasks.

Each question of the problem is one kernel per shard and a sum on the driver: scalars for the
losses, norms and line-search sums, a d x d Gram matrix for a truncated SVD (its top
eigenvectors are the right singular vectors: exact from one reduction, as Spark MLlib's
``RowMatrix.computeSVD`` does for small d), an s x s one for the canonical form, d x s for
each product of the polish's matrix-free Newton operator (:func:`metasp.kernels.newton_product`),
and the shard's dense normal equations ((d s) x (d s) numbers,
:func:`metasp.kernels.basis_system_sums`) where the polish falls back to them. Row blocks are
lists of futures, one per shard; Dask chains the kernels on the workers without bringing them
back.
"""

from __future__ import annotations

import numpy as np

from ..kernels import TruncatedSVD
from . import _shards


class ShardedProblem:
    """The problem of the fixed-heads solver and the polish for tasks in shards on a
    cluster."""

    def __init__(self, cluster, shards, tasks, n_threads: int):
        self.cluster, self.shards, self.n_threads = cluster, shards, n_threads
        self.n_samples, self.n_tasks, self.n_features = (tasks.n_samples, tasks.n_tasks,
                                                         tasks.n_features)
        self._initial_loss = None
        self.on_pass = None  # called after every pass over the data (a progress bar)

    def _each(self, name, func, blocks, *args, others=None):
        """``func`` of every shard's block; the results, gathered."""
        return self.cluster.each(name, func, blocks, *args, others=others)

    def _kept(self, name, func, blocks, *args, others=None):
        """``func`` of every shard's block; futures of the results, left on the workers."""
        return self.cluster.submit_each(name, func, blocks, *args, others=others)

    def _pairs(self, blocks):
        return [(b,) for b in blocks]

    def _block_and_mean(self, name, func, *args, others=None):
        """(futures of each shard's block, mean over tasks of the sums returned beside it):
        one pass over the data."""
        pairs = self._kept(name, func, self.shards, *args, others=others)
        total = sum(self._each(f"{name}-sum", _shards.second, pairs))
        if self.on_pass is not None:
            self.on_pass()
        return self._kept(f"{name}-keep", _shards.first, pairs), total / self.n_tasks

    # Row blocks and their sums.

    def zeros(self, k):
        return self._kept("zeros", _shards.zeros, self.shards, k)

    def combine(self, A, a, B, b):
        return self._kept("combine", _shards.combine, A, a, b, others=self._pairs(B))

    def times(self, A, M):
        return self._kept("times", _shards.times, A, np.ascontiguousarray(M))

    def product(self, W, V):
        return self.times(W, V.T)

    def is_zero(self, A):
        return all(self._each("is-zero", _shards.is_zero, A))

    def change(self, new, old):
        sums = np.sum(self._each("change", _shards.difference_sums, new,
                                 others=self._pairs(old)), axis=0)
        return float(np.sqrt(sums[1])), float(np.sqrt(sums[0]))

    def top_subspace(self, A, s):
        gram = sum(self._each("svd-gram", _shards.gram, A))
        if not np.isfinite(np.trace(gram)):  # ||A||^2
            return None
        values, vectors = np.linalg.eigh((gram + gram.T) / 2)
        V = np.ascontiguousarray(vectors[:, ::-1][:, :s])
        singular_values = np.sqrt(np.maximum(values[::-1][:s], 0.0))
        return TruncatedSVD(V=V, singular_values=singular_values, W=self.times(A, V), basis=V,
                            n_steps=1, converged=True)

    # Passes over the tasks.

    def initial_loss(self):
        if self._initial_loss is None:
            total = sum(self._each("initial-loss", _shards.initial_loss_sum, self.shards))
            self._initial_loss = total / self.n_tasks
        return self._initial_loss

    def gradient(self, Theta):
        return self._block_and_mean("gradient", _shards.gradient_and_loss, self.n_features,
                                    self.n_threads, others=self._pairs(Theta))

    def curvature(self, C, B):
        return float(sum(self._each("curvature", _shards.curvature_sum, self.shards,
                                    np.asfortranarray(B), self.n_threads,
                                    others=self._pairs(C))))

    def line_search_sums(self, G, V, D=None):
        others = list(zip(G, D if D is not None else [None] * len(G)))
        sums = np.sum(self._each("line-search", _shards.line_search_sums, self.shards,
                                 np.ascontiguousarray(V.T), self.n_threads, others=others),
                      axis=0)
        out = dict(zip(("projected", "gradient", "curvature"), sums[:3]))
        if D is None:
            return out, None
        out.update(zip(("direction", "cross", "cross_curvature", "direction_curvature"),
                       sums[3:]))
        return out, self.times(D, V)

    # The polish's questions.

    def heads(self, V):
        return self._block_and_mean("heads", _shards.polish_heads, np.asfortranarray(V),
                                    self.n_threads)

    def canonical(self, heads, U):
        Q, R = np.linalg.qr(U)
        gram = sum(self._each("canonical-gram", _shards.heads_gram, heads, R))
        values, vectors = np.linalg.eigh((gram + gram.T) / 2)
        right = vectors[:, ::-1]
        rotated = self.times(heads, R.T @ right)
        return rotated, Q @ right, np.sqrt(np.maximum(values[::-1], 0.0))

    def basis_system_sums(self, heads, V=None):
        V = None if V is None else np.asfortranarray(V)
        parts = self._each("basis-system", _shards.basis_system_sums, self.shards, V,
                           self.n_features, self.n_threads, others=self._pairs(heads))
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def newton_operator(self, heads, V):
        return _ShardedNewton(self, heads, np.asfortranarray(V))

    def relative_change(self, new, old):
        change, norm = np.sum(self._each("relative-change", _shards.change_sums, new[0], new[1],
                                         old[1], others=self._pairs(old[0])), axis=0)
        return float(np.sqrt(change / norm)) if norm > 0 else 0.0


class _ShardedNewton:
    """The polish's Newton system over shards, matrix-free (as :func:`metasp._polish.newton_cg`
    reads it): each product is one kernel per shard (:func:`metasp.kernels.newton_product`)
    and a d x s sum."""

    def __init__(self, problem, heads, V):
        self.problem, self.heads, self.V = problem, heads, V
        parts = problem._each("newton-terms", _shards.newton_terms, problem.shards, V,
                              problem.n_threads, others=problem._pairs(heads))
        self.rhs = sum(p[0] for p in parts)
        self.data_diagonal = sum(p[1] for p in parts)
        self.scale = max(float(np.mean(self.data_diagonal)), np.finfo(float).tiny)

    def apply(self, D):
        p = self.problem
        product = sum(p._each("newton-product", _shards.newton_product, p.shards, self.V,
                              np.asfortranarray(D), p.n_threads, others=p._pairs(self.heads)))
        return product + self.scale * (self.V @ (self.V.T @ D))
