"""Few-shot evaluation: how well does a learned subspace serve new tasks with k samples?

The protocol of :func:`few_shot`: split the tasks into training and held-out tasks; learn from
the training tasks; on each held-out task, fit the head on ``k`` random samples (the support
set) and score the mean squared error on the others (the query set). Repeat with new random
splits and report the mean and spread over the repeats.

A *method* is a name from :func:`available_methods` or a callable
``method(train, rank, rng) -> predict`` where ``train`` is a :class:`metasp.Tasks`, ``rank`` the
subspace dimension for this repeat and ``rng`` a ``numpy.random.Generator``, and
``predict(support, query)`` returns predictions for all rows of ``query`` (stacked like
``query.y``), given the support samples of the same tasks.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np

from ._arrays import is_integer
from ._progress import progress
from ._result import ConvergenceWarning
from ._tasks import as_tasks
from ._validation import check_shots
from .baselines import BASELINES

__all__ = ["available_methods", "few_shot", "format_table"]

# Ridge strengths tried by the per-task ridge, relative to the mean squared feature value.
RIDGE_GRID = np.logspace(-3, 4, 22)
# Baselines that need information real data do not have (the true subspace).
_NEEDS_TRUTH = tuple(name for name, baseline in BASELINES.items() if baseline.needs_truth)


def _baseline_names() -> tuple:
    return tuple(name for name, baseline in BASELINES.items() if not baseline.needs_truth)


def available_methods() -> tuple:
    """Names of the built-in methods :func:`few_shot` accepts.

    Returns
    -------
    tuple of str
        ``"metasp"`` (head by ``adapt(prior="empirical")``), ``"metasp_no_prior"`` (the paper's
        least-squares head), every subspace baseline of :mod:`metasp.baselines` (heads by the
        same empirical prior as ``"metasp"``, in their own subspace), ``"ridge"`` (per-task
        ridge, strength by leave-one-out cross-validation on the support set),
        ``"ridge_tuned"`` (per-task ridge, one strength chosen by few-shot cross-validation on
        the training tasks), ``"pooled"`` (one least-squares fit to all training samples) and
        ``"pooled_intercept"`` (pooled slopes, an intercept per task).
    """
    return ("metasp", "metasp_no_prior", *_baseline_names(), "ridge", "ridge_tuned", "pooled",
            "pooled_intercept")


# --- methods: (train, rank, rng) -> predict(support, query) -------------------------------------

def _subspace_method(fit_subspace, prior):
    def method(train, rank, rng):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = fit_subspace(train, rank, rng)
        if prior == "empirical" and result.noise_variance is None:
            result.fit_prior(train)

        def predict(support, query):
            out = np.empty(query.n_samples)
            for t in range(support.n_tasks):
                X, y = support[t]
                w = result.adapt(X, y, prior=prior)
                rows = slice(query.offsets[t], query.offsets[t + 1])
                out[rows] = result.predict(query.X[rows], w)
            return out

        return predict

    return method


def _metasp_fit(fit_options):
    def fit_subspace(train, rank, rng):
        from ._solver import fit

        return fit(train, s=rank, random_state=rng, **fit_options)

    return fit_subspace


def _baseline_fit(name, options):
    def fit_subspace(train, rank, rng):
        baseline = BASELINES[name]
        seed = {"random_state": rng} if baseline.seeded else {}
        return baseline.function(train, s=rank, **seed, **options)

    return fit_subspace


def _centred_support(support):
    """Per-task support arrays (n, k, d), (n, k), centred, and their means."""
    k = support.task_sizes
    if (k != k[0]).any():
        raise ValueError("the support sets must all have the same size k")
    # float64 (a float32 X would otherwise keep its SVDs in float32); support sets are small.
    X = support.X.reshape(support.n_tasks, int(k[0]), support.n_features).astype(np.float64)
    y = support.y.reshape(support.n_tasks, int(k[0]))
    x_mean, y_mean = X.mean(axis=1), y.mean(axis=1)
    return X - x_mean[:, None], y - y_mean[:, None], x_mean, y_mean


def _ridge_paths(support, strengths):
    """Ridge with an unpenalised intercept on every support set, for every strength.

    Returns the coefficients (n, L, d), intercepts (n, L) and leave-one-out residuals
    (n, L, k), from one thin SVD of each centred support set.
    """
    Xc, yc, x_mean, y_mean = _centred_support(support)
    U, sv, Vt = np.linalg.svd(Xc, full_matrices=False)  # (n,k,r), (n,r), (n,r,d)
    Uy = np.einsum("nkr,nk->nr", U, yc)
    shrink = sv[:, None, :] / (sv[:, None, :] ** 2 + strengths[None, :, None])  # (n, L, r)
    coef = np.einsum("nlr,nr,nrd->nld", shrink, Uy, Vt)
    intercept = y_mean[:, None] - np.einsum("nld,nd->nl", coef, x_mean)
    # Hat matrix of ridge with intercept: 1/k + U diag(s^2 / (s^2 + lambda)) U^T.
    k = Xc.shape[1]
    gain = sv[:, None, :] * shrink  # s^2 / (s^2 + lambda)
    fitted = np.einsum("nkr,nlr,nr->nlk", U, gain, Uy)
    leverage = 1.0 / k + np.einsum("nkr,nlr->nlk", U**2, gain)
    residual = yc[:, None, :] - fitted
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = residual / (1.0 - leverage)
    loo[~np.isfinite(loo)] = np.inf  # an interpolating fit has no leave-one-out information
    loo[np.isclose(leverage, 1.0, rtol=0, atol=1e-10)] = np.inf
    return coef, intercept, loo


def _predict_rows(query, coef, intercept):
    task = query.task_of_row
    return intercept[task] + np.einsum("nd,nd->n", query.X, coef[task])


def _strengths(train):
    return RIDGE_GRID * float(np.mean(train.X**2))


def _ridge_loo(train, rank, rng):
    strengths = _strengths(train)

    def predict(support, query):
        coef, intercept, loo = _ridge_paths(support, strengths)
        best = np.argmin(np.mean(loo**2, axis=2), axis=1)  # per task
        rows = np.arange(support.n_tasks)
        return _predict_rows(query, coef[rows, best], intercept[rows, best])

    return predict


def _ridge_tuned(train, rank, rng):
    strengths = _strengths(train)
    state = {}

    def predict(support, query):
        k = int(support.task_sizes[0])
        if k not in state:
            # One strength for all new tasks: the best few-shot MSE on the training tasks.
            usable = train.subset(np.flatnonzero(train.task_sizes > k))
            s_train, q_train = usable.split_samples(k, random_state=rng)
            coef, intercept, _ = _ridge_paths(s_train, strengths)
            errors = [
                np.mean((q_train.y - _predict_rows(q_train, coef[:, j], intercept[:, j])) ** 2)
                for j in range(strengths.size)]
            state[k] = int(np.argmin(errors))
        coef, intercept, _ = _ridge_paths(support, strengths[state[k]:state[k] + 1])
        return _predict_rows(query, coef[:, 0], intercept[:, 0])

    return predict


def _pooled(train, rank, rng):
    coef = np.linalg.lstsq(train.X, train.y, rcond=None)[0]

    def predict(support, query):
        return query.X @ coef

    return predict


def _pooled_intercept(train, rank, rng):
    # Fixed effects: slopes from within-task centred data, one intercept per task.
    task = train.task_of_row
    sizes = train.task_sizes[:, None]
    X_mean = np.add.reduceat(train.X, train.offsets[:-1], axis=0, dtype=np.float64) / sizes
    y_mean = np.add.reduceat(train.y, train.offsets[:-1]) / train.task_sizes
    slopes = np.linalg.lstsq(train.X - X_mean[task], train.y - y_mean[task], rcond=None)[0]

    def predict(support, query):
        intercept = (np.add.reduceat(support.y - support.X @ slopes, support.offsets[:-1])
                     / support.task_sizes)
        return np.repeat(intercept, query.task_sizes) + query.X @ slopes

    return predict


def _resolve_methods(methods, fit_options, baseline_options):
    if methods is None:
        methods = available_methods()
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    resolved = {}
    builtin = {
        "metasp": _subspace_method(_metasp_fit(fit_options), "empirical"),
        "metasp_no_prior": _subspace_method(_metasp_fit(fit_options), "none"),
        "ridge": _ridge_loo,
        "ridge_tuned": _ridge_tuned,
        "pooled": _pooled,
        "pooled_intercept": _pooled_intercept,
    }
    for name in _baseline_names():
        builtin[name] = _subspace_method(_baseline_fit(name, baseline_options.get(name, {})),
                                         "empirical")
    for method in methods:
        if isinstance(method, str):
            if method in _NEEDS_TRUTH:
                raise ValueError(f"{method!r} needs the true subspace, which few_shot does not "
                                 "have; pass it as a callable method instead")
            if method not in builtin:
                raise ValueError(f"unknown method {method!r}; choose from "
                                 f"{', '.join(available_methods())} or pass a callable")
            resolved[method] = builtin[method]
        elif callable(method):
            resolved[getattr(method, "__name__", repr(method))] = method
        else:
            raise TypeError(f"a method must be a name or a callable; got {method!r}")
    return resolved


def few_shot(methods, tasks, shots=(3, 5, 8), n_repeats=5, test_fraction=0.2,
             random_state=None, *, rank=None, select_options=None, fit_options=None,
             baseline_options=None, as_frame=False, verbose=False):
    """Compare methods on new tasks with few samples (the meta-learning protocol).

    For each of ``n_repeats`` repeats: the tasks are split at random into training tasks and
    ``test_fraction`` held-out tasks; every method learns from the training tasks; then for
    each ``k`` in ``shots``, every held-out task gets ``k`` random support samples to fit its
    head and is scored by the mean squared error on its remaining (query) samples. A repeat's
    score is the MSE over all query samples of all held-out tasks; the table reports the mean
    and standard deviation of that score over the repeats. All methods see the same splits.

    Parameters
    ----------
    methods : sequence of str or callables, or None
        Names from :func:`available_methods` (``None``: all of them) or callables
        ``method(train, rank, rng) -> predict`` (see the module docstring).
    tasks : Tasks, or (Xs, ys)
        All tasks; held-out tasks need more than ``max(shots)`` samples.
    shots : sequence of int, default (3, 5, 8)
        Support-set sizes k.
    n_repeats : int, default 5
        Random task splits.
    test_fraction : float, default 0.2
        Fraction of the tasks held out in each repeat.
    random_state : None, int or numpy.random.Generator, default None
        Seeds the splits and the fits: the same seed gives the same table.
    rank : int or None, default None
        Subspace dimension for the subspace methods. ``None``: chosen in each repeat by
        :func:`metasp.select_rank` on that repeat's training tasks, by default with
        ``holdout="tasks"`` and these ``shots`` (scored like this table).
    select_options : dict, optional
        Keyword arguments of :func:`metasp.select_rank` (for example ``ranks``, ``cv``,
        ``holdout``).
    fit_options : dict, optional
        Keyword arguments of :func:`metasp.fit` (for example ``max_iter``), also used by
        ``select_rank``.
    baseline_options : dict of str to dict, optional
        Keyword arguments per baseline, e.g. ``{"anil": {"inner_lr": 0.02}}``.
    as_frame : bool, default False
        Return a pandas DataFrame (needs pandas) instead of a list of dicts.
    verbose : bool, default False
        Show progress.

    Returns
    -------
    list of dict or pandas.DataFrame
        One row per method and k: ``method``, ``shots``, ``mean_mse``, ``std_mse`` (over the
        repeats), ``n_repeats``, ``mse`` (the per-repeat scores) and ``ranks`` (the rank
        used in each repeat). :func:`format_table` prints it.

    Examples
    --------
    >>> import metasp
    >>> from metasp.evaluate import few_shot
    >>> X, y, B, W = metasp.datasets.make_hps(T=60, m=15, d=10, s=2, sigma=0.1, random_state=0)
    >>> table = few_shot(["metasp", "pooled"], metasp.Tasks.from_array(X, y), shots=(3,),
    ...                  n_repeats=2, rank=2, random_state=0)
    >>> [(row["method"], row["shots"]) for row in table]
    [('metasp', 3), ('pooled', 3)]
    >>> table[0]["mean_mse"] < table[1]["mean_mse"]
    True
    """
    if isinstance(tasks, tuple) and len(tasks) == 2:
        tasks = as_tasks(*tasks)
    tasks = as_tasks(tasks)
    shots = check_shots(shots)
    if not is_integer(n_repeats) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer; got {n_repeats!r}")
    if rank is not None and (not is_integer(rank) or rank < 1):
        raise ValueError(f"rank must be None or a positive integer; got {rank!r}")
    if as_frame:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError('as_frame=True needs pandas: pip install "metasp[pandas]"') from None
    fit_options = dict(fit_options or {})
    # The rank is chosen the way it is scored here: few-shot adaptation on held-out tasks.
    select_options = {"holdout": "tasks", "shots": shots, **(select_options or {})}
    baseline_options = dict(baseline_options or {})
    methods = _resolve_methods(methods, fit_options, baseline_options)
    if (tasks.task_sizes <= max(shots)).any():
        raise ValueError(
            f"some tasks have at most max(shots) = {max(shots)} samples, leaving no query "
            f"sample; keep larger tasks with tasks.subset(np.flatnonzero(tasks.task_sizes > "
            f"{max(shots)}))")
    # Independent streams per repeat: the splits do not depend on which methods run.
    seeds = np.random.SeedSequence(np.random.default_rng(random_state).integers(2**63))
    scores = {(name, k): [] for name in methods for k in shots}
    ranks_used = []
    for seed in progress(seeds.spawn(n_repeats), desc="few-shot repeats", enable=verbose):
        split_rng, rng = (np.random.default_rng(child) for child in seed.spawn(2))
        train, test = tasks.split_tasks(test_fraction, random_state=split_rng)
        repeat_rank = rank
        if repeat_rank is None:
            from ._select_rank import select_rank

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                repeat_rank = select_rank(train, random_state=rng, **select_options,
                                          **fit_options).best_rank
        ranks_used.append(repeat_rank)
        splits = {k: test.split_samples(k, random_state=split_rng) for k in shots}
        method_entropy = int(rng.integers(2**63))
        for name, method in methods.items():
            # Seeded by name: a method's draws do not depend on which other methods run.
            method_rng = np.random.default_rng([method_entropy, zlib.crc32(name.encode())])
            predict = method(train, repeat_rank, method_rng)
            for k, (support, query) in splits.items():
                scores[name, k].append(float(np.mean((query.y - predict(support, query)) ** 2)))
    rows = [{"method": name, "shots": k, "mean_mse": float(np.mean(values)),
             "std_mse": float(np.std(values)), "n_repeats": n_repeats, "mse": values,
             "ranks": ranks_used}
            for (name, k), values in scores.items()]
    if as_frame:
        return pd.DataFrame(rows)
    return rows


def format_table(rows) -> str:
    """A methods x shots text table of ``mean +- sd`` MSE from the output of :func:`few_shot`.

    Parameters
    ----------
    rows : list of dict or pandas.DataFrame
        The table returned by :func:`few_shot`.

    Returns
    -------
    str
        One line per method, one column per k, the lowest mean in each column marked ``*``.
    """
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    methods = list(dict.fromkeys(row["method"] for row in rows))
    shots = sorted({row["shots"] for row in rows})
    cell = {(row["method"], row["shots"]): row for row in rows}
    best = {k: min((cell[m, k]["mean_mse"], m) for m in methods if (m, k) in cell)[1]
            for k in shots}
    width = max(len(m) for m in methods)
    header = f"{'method':<{width}}  " + "  ".join(f"{f'k = {k}':>17}" for k in shots)
    lines = [header, "-" * len(header)]
    for m in methods:
        cells = []
        for k in shots:
            if (m, k) not in cell:
                cells.append(f"{'':>17}")
                continue
            row = cell[m, k]
            star = "*" if best[k] == m else " "
            cells.append(f"{row['mean_mse']:.4f} +- {row['std_mse']:.4f}{star}")
        lines.append(f"{m:<{width}}  " + "  ".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)
