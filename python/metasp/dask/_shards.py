"""What runs on the workers: one shard of tasks (the rows of whole tasks, co-located by the
shuffle) and the per-shard kernels whose small outputs the driver reduces."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from dask.sizeof import sizeof

from .. import kernels
from .._tasks import Tasks as LocalTasks
from .._tasks import is_numeric_column


class Shard(NamedTuple):
    """The tasks of one partition after the shuffle, in sorted label order."""

    index: int  # partition number after the shuffle
    tasks: LocalTasks | None  # None where the shuffle left the partition empty
    labels: np.ndarray  # (T_p,) group labels, in task order


@sizeof.register(Shard)
def _shard_bytes(shard: Shard) -> int:
    """The shard's memory, for Dask's scheduler: without it Dask's default for tuples sees a
    few hundred bytes, finds a gigabyte shard cheap to move, and copies it to wherever a small
    kernel on it could start sooner (its memory accounting misses the data too)."""
    labels = sizeof(shard.labels)
    if shard.tasks is None:
        return labels
    t = shard.tasks
    return int(t.X.nbytes + t.y.nbytes + t.offsets.nbytes) + labels


class ShardSummary(NamedTuple):
    """What the driver needs to know about a shard: sizes and the scale of its data."""

    n_tasks: int
    n_samples: int
    n_features: int
    spare: int  # sum over tasks of max(m_t - s, 0) is computed later; here the sizes' sum
    x_task_max_largest: float  # largest max |X| over its tasks
    x_task_max_smallest: float  # smallest positive max |X| over its tasks (inf if none)
    y_largest: float


def where(index, file=None) -> str:
    return f"partition {index}" + (f" (file {file})" if file is not None else "")


def check_partition(pdf, group, target, features, partition_info=None, path_column=None):
    """Raise a ValueError/TypeError naming the input partition (and its file, where the frame
    carries a path column) for anything a fit cannot use; return the partition unchanged."""
    index = None if partition_info is None else partition_info.get("number")
    file = None
    if path_column is not None and path_column in pdf.columns and len(pdf):
        file = str(pdf[path_column].iloc[0])
    place = where(index, file)
    for role, column in (("group", group), ("target", target)):
        if column not in pdf.columns:
            raise ValueError(f"{place}: the {role} column {column!r} is missing; its columns "
                             f"are {pdf.columns.tolist()}")
    absent = [c for c in features if c not in pdf.columns]
    if absent:
        raise ValueError(f"{place}: feature columns {absent} are missing (its columns are "
                         f"{pdf.columns.tolist()}); every partition and file needs the same "
                         f"feature columns")
    for column in (target, *features):
        if not is_numeric_column(pdf[column]):
            raise TypeError(f"{place}: column {column!r} has dtype {pdf[column].dtype}, which is "
                            f"not numeric; encode or convert it (pd.to_numeric) first")
    if pdf[group].isna().any():
        raise ValueError(f"{place}: {int(pdf[group].isna().sum())} rows have no {group!r} label; "
                         f"drop them or give them a label first")
    values = pdf[[target, *features]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        columns = [str(c) for c, b in zip([target, *features], bad.any(axis=0)) if b]
        raise ValueError(f"{place}: columns {columns} hold NaN or infinite values "
                         f"({int(bad.sum())} entries); drop or impute them first")
    return pdf


def build_shard(pdf, index, group, target, features, dtype=None) -> Shard:
    """The tasks of one shuffled partition, ordered by sorted group label."""
    if len(pdf) == 0:
        return Shard(index, None, np.empty(0, dtype=object))
    values = pdf[[target, *features]].to_numpy(dtype=np.float64)
    tasks = LocalTasks.from_groups(values[:, 1:], values[:, 0], pdf[group].to_numpy(),
                                   dtype=dtype)
    tasks.feature_names = tuple(str(f) for f in features)
    return Shard(index, tasks, np.asarray(tasks.labels))


def placed(shard: Shard) -> Shard:
    """The shard itself: a task Dask runs on the worker the shard should live on."""
    return shard


def summary(shard: Shard) -> ShardSummary:
    tasks = shard.tasks
    if tasks is None:
        return ShardSummary(0, 0, 0, 0, 0.0, np.inf, 0.0)
    X = tasks.X
    row_max = np.maximum(X.max(axis=1), -X.min(axis=1))
    task_max = np.maximum.reduceat(row_max, tasks.offsets[:-1]).astype(np.float64)
    positive = task_max[task_max > 0]
    return ShardSummary(tasks.n_tasks, tasks.n_samples, tasks.n_features, tasks.n_samples,
                        float(task_max.max()),
                        float(positive.min()) if positive.size else np.inf,
                        float(np.abs(tasks.y).max()))


# ---- per-shard kernels of md.fit: each returns sums of at most d x d numbers --------------

def rescaled(shard: Shard, x_exponent: int, y_exponent: int) -> Shard:
    """The shard's data times 2^-x and 2^-y (exact), as metasp.fit rescales."""
    if shard.tasks is None or (x_exponent == 0 and y_exponent == 0):
        return shard
    t = shard.tasks
    X = np.ldexp(t.X, -x_exponent) if x_exponent else t.X
    y = np.ldexp(t.y, -y_exponent) if y_exponent else t.y
    return Shard(shard.index, LocalTasks(X, y, t.offsets, t.labels, t.feature_names),
                 shard.labels)


def square_sums(shard: Shard, s: int) -> np.ndarray:
    """[sum X^2, X.size, sum y^2, y.size, sum_t max(m_t - s, 0), T_p]."""
    if shard.tasks is None:
        return np.zeros(6)
    t = shard.tasks
    return np.array([np.einsum("ij,ij->", t.X, t.X, dtype=np.float64), t.X.size,
                     float(np.sum(t.y ** 2)), t.y.size,
                     float(np.maximum(t.task_sizes - s, 0).sum()), t.n_tasks])


def start_gram(shard: Shard, d: int, n_threads: int) -> np.ndarray:
    """G^T G of the rows G[t] = X_t^T y_t / m_t: the spectral start is its top eigenvectors."""
    if shard.tasks is None:
        return np.zeros((d, d))
    t = shard.tasks
    G = kernels.gradient(t, np.zeros((t.n_tasks, t.n_features)), n_jobs=n_threads).G
    return G.T @ G


def fold(shard: Shard, first_task: int, n_tasks: int, seed: int, k: int, held_out: bool):
    """The shard's tasks in held-out fold ``k`` (or all others), with the folds metasp.fit
    draws over all T tasks (from ``seed``)."""
    from .._random_heads import fold_of_tasks

    if shard.tasks is None:
        return shard
    folds = fold_of_tasks(n_tasks, seed)[first_task:first_task + shard.tasks.n_tasks]
    return tasks_in_fold(shard, folds, k, held_out)


def tasks_in_fold(shard: Shard, folds: np.ndarray, k: int, held_out: bool) -> Shard:
    """The shard's tasks whose entry of ``folds`` (one per task) is ``k`` (or all others)."""
    if shard.tasks is None:
        return shard
    chosen = np.flatnonzero((folds == k) == held_out)
    if chosen.size == 0:
        return Shard(shard.index, None, shard.labels[:0])
    return Shard(shard.index, shard.tasks.subset(chosen), shard.labels[chosen])


def marginal_sums(shard: Shard, U, noise: float, n_threads: int):
    """(deviance, gradient (d, s), expected, sum of task losses) of kernels.marginal_pass."""
    if shard.tasks is None:
        return 0.0, np.zeros_like(U), 0.0, 0.0
    out = kernels.marginal_pass(shard.tasks, U, noise, n_jobs=n_threads)
    return out.deviance, out.gradient, out.expected, float(np.sum(out.task_loss))


def posterior_heads(shard: Shard, U, noise: float, n_threads: int) -> np.ndarray:
    """(T_p, s) posterior means of the heads; kept on the worker."""
    if shard.tasks is None:
        return np.zeros((0, U.shape[1]))
    return kernels.marginal_pass(shard.tasks, U, noise, n_jobs=n_threads).heads


def least_squares_moments(shard: Shard, B: np.ndarray, n_threads: int) -> np.ndarray:
    """metasp._random_heads.least_squares_moments of the shard's tasks in the row space of B."""
    from .._random_heads import least_squares_moments

    s = B.shape[0]
    if shard.tasks is None:
        return np.zeros(s * s + 3)
    gram, cross, squares = statistics(shard, B, n_threads)
    return least_squares_moments(gram, cross, squares, shard.tasks.task_sizes)


def heads_gram(heads: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(H R^T)^T (H R^T): the s x s Gram matrix whose eigenvectors give the canonical form."""
    A = heads @ R.T
    return A.T @ A


# ---- row blocks of the fixed-heads solver: (T_p, k) arrays kept on the worker ------------

def zeros(shard: Shard, k: int) -> np.ndarray:
    return np.zeros((0 if shard.tasks is None else shard.tasks.n_tasks, k))


def combine(A: np.ndarray, B: np.ndarray, a: float, b: float) -> np.ndarray:
    return a * A + b * B


def is_zero(A: np.ndarray) -> bool:
    return not np.any(A)


def gram(A: np.ndarray) -> np.ndarray:
    return A.T @ A


def difference_sums(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """[||new - old||_F^2, ||new||_F^2]."""
    return np.array([np.sum((new - old) ** 2), np.sum(new**2)])


def initial_loss_sum(shard: Shard) -> float:
    """Sum over the shard's tasks of ||y_t||^2 / m_t (their loss at Theta = 0)."""
    if shard.tasks is None:
        return 0.0
    t = shard.tasks
    return float(np.sum(np.add.reduceat(t.y**2, t.offsets[:-1]) / t.task_sizes))


def gradient_and_loss(shard: Shard, Theta: np.ndarray, d: int, n_threads: int):
    """(kernels.gradient's (T_p, d) rows at Theta, the sum of the task losses)."""
    if shard.tasks is None:
        return np.zeros((0, d)), 0.0
    out = kernels.gradient(shard.tasks, Theta, n_jobs=n_threads)
    return out.G, float(np.sum(out.task_loss))


def curvature_sum(shard: Shard, C: np.ndarray, B: np.ndarray, n_threads: int) -> float:
    """Sum of kernels.curvature over the shard's tasks."""
    if shard.tasks is None:
        return 0.0
    return float(np.sum(kernels.curvature(shard.tasks, C, B, n_jobs=n_threads)))


def line_search_sums(shard: Shard, G: np.ndarray, D, B: np.ndarray,
                     n_threads: int) -> np.ndarray:
    """The shard's sums of the exact line search (``line_search_sums`` of
    metasp._hard_thresholding) in the row space of B, from one pass over its rows: with
    R = G B^T, P = D B^T and Z_t = X_t B^T, [||R||^2, ||G||^2, sum_t ||Z_t r_t||^2 / m_t, and
    with D: ||P||^2, <R, P>, sum_t <Z_t r_t, Z_t p_t> / m_t, sum_t ||Z_t p_t||^2 / m_t]."""
    if shard.tasks is None:
        return np.zeros(7)
    R = G @ B.T
    gram = kernels.task_statistics(shard.tasks, B, n_jobs=n_threads).gram
    sizes = shard.tasks.task_sizes
    ZR = np.einsum("tij,tj->ti", gram, R)
    sums = [np.sum(R**2), np.sum(G**2), np.sum(np.einsum("ti,ti->t", R, ZR) / sizes)]
    if D is None:
        return np.array(sums + [0.0] * 4)
    P = D @ B.T
    ZP = np.einsum("tij,tj->ti", gram, P)
    return np.array(sums + [np.sum(P**2), np.sum(R * P),
                            np.sum(np.einsum("ti,ti->t", R, ZP) / sizes),
                            np.sum(np.einsum("ti,ti->t", P, ZP) / sizes)])


def polish_heads(shard: Shard, V: np.ndarray, n_threads: int):
    """((T_p, s) least-squares heads in span(V), the sum of their task losses)."""
    if shard.tasks is None:
        return np.zeros((0, V.shape[1])), 0.0
    out = kernels.task_heads(shard.tasks, V, n_jobs=n_threads)
    return out.W, float(np.sum(out.task_loss))


def first(pair):
    return pair[0]


def second(pair):
    return pair[1]


def times(A: np.ndarray, M: np.ndarray) -> np.ndarray:
    return A @ M


def basis_system_sums(shard: Shard, heads: np.ndarray, V, d: int, n_threads: int):
    """kernels.basis_system_sums of the shard's tasks (M, rhs)."""
    if shard.tasks is None:
        n = d * heads.shape[1]
        return np.zeros((n, n)), np.zeros(n)
    return tuple(kernels.basis_system_sums(shard.tasks, heads, subspace=V, n_jobs=n_threads))


def newton_terms(shard: Shard, heads: np.ndarray, V: np.ndarray, n_threads: int):
    """kernels.newton_terms of the shard's tasks: (rhs, diagonal), (d, s) each."""
    if shard.tasks is None:
        return np.zeros(V.shape), np.zeros(V.shape)
    return tuple(kernels.newton_terms(shard.tasks, heads, V, n_jobs=n_threads))


def newton_product(shard: Shard, heads: np.ndarray, V: np.ndarray, D: np.ndarray,
                   n_threads: int) -> np.ndarray:
    """kernels.newton_product of the shard's tasks."""
    if shard.tasks is None:
        return np.zeros(V.shape)
    return kernels.newton_product(shard.tasks, heads, V, D, n_jobs=n_threads)


def change_sums(new: np.ndarray, old: np.ndarray, V_new: np.ndarray, V_old: np.ndarray):
    """[||new V_new^T - old V_old^T||_F^2, ||new V_new^T||_F^2] over the shard's tasks."""
    return difference_sums(new @ V_new.T, old @ V_old.T)


def statistics(shard: Shard, B: np.ndarray, n_threads: int):
    """(gram, cross, squares) of kernels.task_statistics in the row space of B; kept."""
    s = B.shape[0]
    if shard.tasks is None:
        return np.zeros((0, s, s)), np.zeros((0, s)), np.zeros(0)
    return tuple(kernels.task_statistics(shard.tasks, B, n_jobs=n_threads)[:3])


def prior_start_sums(stats, floor: float, x_unit: float, y_unit: float):
    """Sums behind the head prior's start (per-task least squares): (T, sum w, sum w w^T,
    residual sum), in the EM's units."""
    from .._prior import least_squares_heads, residual_sums

    gram, cross, squares = stats
    gram, cross, squares = gram / x_unit**2, cross / (x_unit * y_unit), squares / y_unit**2
    heads = least_squares_heads(gram, cross, floor)
    return (heads.shape[0], heads.sum(axis=0), heads.T @ heads,
            float(residual_sums(heads, gram, cross, squares).sum()))


def unit_sums(stats):
    """(sum of squares, sum of the grams' traces, T): the EM's units."""
    gram, _, squares = stats
    return float(np.sum(squares)), float(np.trace(gram, axis1=1, axis2=2).sum()), squares.size


def em_sums(stats, params, x_unit: float, y_unit: float):
    """The per-task sums of one EM step of the head prior (as metasp.reference's
    head_prior_em_step, whose final division the driver does)."""
    from .._prior import residual_sums

    gram, cross, squares = stats
    gram, cross, squares = gram / x_unit**2, cross / (x_unit * y_unit), squares / y_unit**2
    mean, cov, noise = params
    s = mean.shape[0]
    cov_inv = np.linalg.inv(cov)
    precision = gram / noise + cov_inv
    posterior_cov = np.linalg.inv(precision)
    rhs = cross / noise + cov_inv @ mean
    posterior_mean = np.einsum("tsr,tr->ts", posterior_cov, rhs)
    if gram.shape[0] == 0:
        return np.zeros(s), np.zeros((s, s)), np.zeros((s, s)), 0.0, 0.0, 0.0
    return (posterior_mean.sum(axis=0), posterior_mean.T @ posterior_mean,
            posterior_cov.sum(axis=0),
            float(residual_sums(posterior_mean, gram, cross, squares).sum()
                  + np.einsum("tsr,tsr->", gram, posterior_cov)),
            float(np.linalg.slogdet(precision)[1].sum()),
            float(squares.sum() / noise - np.einsum("ts,ts->", rhs, posterior_mean)))


def rank_gram(shard: Shard, stats, heads, B: np.ndarray, n_threads: int):
    """(G^T G, sum G^2) of the residual correlations G[t] = X_t^T r_t / m_t, scaled by
    sqrt(m_t): the rank check's pieces. At the fit's ``heads``; where those are shrunk (None),
    at least-squares heads in B, projected off B (as metasp.fit's rank check)."""
    from .._prior import least_squares_heads

    d = B.shape[1]
    if shard.tasks is None:
        return np.zeros((d, d)), 0.0
    if heads is None:
        gram, cross, _ = stats
        G = kernels.gradient(shard.tasks, least_squares_heads(gram, cross) @ B,
                             n_jobs=n_threads).G
        G -= (G @ B.T) @ B
    else:
        G = kernels.gradient(shard.tasks, heads @ B, n_jobs=n_threads).G
    G *= np.sqrt(shard.tasks.task_sizes)[:, None]
    return G.T @ G, float(np.sum(G**2))


def predictive_variances(shard: Shard, stats, head_cov: np.ndarray) -> np.ndarray:
    """(T_p,) per-task prior predictive variance (the weak-direction check's values)."""
    if shard.tasks is None:
        return np.zeros(0)
    return np.einsum("tsr,rs->t", stats[0], head_cov) / shard.tasks.task_sizes


# ---- per-shard pieces of md.select_rank(holdout="tasks") ----------------------------------

class HeadPrior(NamedTuple):
    """What adapting a held-out task needs of a fit: the subspace and the head prior."""

    B: np.ndarray
    head_mean: np.ndarray
    head_cov: np.ndarray
    noise_variance: float


def eligible_count(shard: Shard, max_shots: int) -> int:
    """Tasks with more than ``max(shots)`` samples: those that may be held out."""
    if shard.tasks is None:
        return 0
    return int(np.count_nonzero(shard.tasks.task_sizes > max_shots))


def draw_task_folds(rng, counts, cv: int):
    """(fold of the eligible tasks, split per shard; the generator after the draw): the folds
    metasp.select_rank deals over all eligible tasks in the global order, drawn once."""
    from .._select_rank import fold_of_eligible

    folds = fold_of_eligible(int(np.sum(counts)), cv, rng).astype(np.int32)
    return np.split(folds, np.cumsum(counts)[:-1]), rng


def shard_piece(draw, index: int) -> np.ndarray:
    return draw[0][index]


def generator_after(draw):
    return draw[1]


def task_folds(shard: Shard, eligible_folds: np.ndarray, max_shots: int) -> np.ndarray:
    """(T_p,) fold of each of the shard's tasks; -1 for those never held out."""
    if shard.tasks is None:
        return np.zeros(0, dtype=np.int32)
    folds = np.full(shard.tasks.n_tasks, -1, dtype=np.int32)
    folds[shard.tasks.task_sizes > max_shots] = eligible_folds
    return folds


def few_shot_sums(test: Shard, rows_before: int, prior: HeadPrior, shots, seed) -> np.ndarray:
    """(len(shots), 2): for each k in ``shots``, the sum of squared query errors of the shard's
    held-out tasks adapted on k support samples, and the number of query samples.

    The support samples are those metasp.select_rank draws over all held-out tasks in the
    global order (one key per sample from ``[seed, k]``): this shard's keys start
    ``rows_before`` draws into that stream.
    """
    from .._select_rank import query_squared_error

    sums = np.zeros((len(shots), 2))
    if test.tasks is None:
        return sums
    for j, k in enumerate(shots):
        rng = np.random.default_rng([seed, k])
        rng.bit_generator.advance(rows_before)  # one 64-bit draw per uniform key
        support, query = test.tasks.split_samples(k, random_state=rng)
        sums[j] = query_squared_error(prior, support, query), query.n_samples
    return sums
