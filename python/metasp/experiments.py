r"""The paper's experiments and the literature's standard grid, reproducible from one command.

Each experiment simulates tasks from the hard-parameter-sharing model, runs the methods of
:mod:`metasp.baselines` and :func:`metasp.fit` on them, and writes one CSV row per run (and a
PNG plot when matplotlib is installed)::

    python -m metasp experiment --list
    python -m metasp experiment error_vs_T --quick --out results

or, from Python, :func:`run`. ``quick=True`` runs a small version in a few seconds (a smoke
test); the full versions of the first nine experiments together took 8.5 minutes (13 at a
higher load) on a shared 2-core machine, and ``scarce_data`` alone 11 minutes there (one
thread; most of it the trace norm's seven weights and AltMin's capped runs).

On a machine shared with other work, set ``OMP_WAIT_POLICY=passive`` and
``OPENBLAS_NUM_THREADS=1``: busy-waiting OpenMP and OpenBLAS threads that compete for cores
made single C++ kernel passes 10-20 times and small NumPy calls up to 100 times slower there.

Columns of the method experiments: ``experiment, method, T, m, d, s, s_fit, sigma, features,
diversity, seed, sin_angle, frobenius_error, fewshot_mse, wall_time, n_iter, status,
warnings``. ``sin_angle`` compares the estimated and true subspaces (when ``s_fit`` differs from
``s``, the smaller one against the larger: is it contained in it); ``fewshot_mse`` is the mean
squared prediction error on noisy held-out samples of new tasks whose heads were fitted on
``2 s`` samples each (so its floor is ``sigma**2``); ``wall_time`` is the seconds the method
took, excluding the evaluation.

The ``rip`` experiment has the columns ``experiment, direction, T, m, d, rank, seed, trials,
delta, wall_time``: ``delta`` is :math:`\max |\,\|\mathcal A(\Theta)\|^2 /
\|\Theta\|_F^2 - 1|` for the task operator :math:`\mathcal A(\Theta)_t = X_t \theta_t /
\sqrt{m}`, over ``trials`` random rank-``rank`` directions spread over all tasks
(``random_rank_r``, a lower bound on the restricted-isometry constant), or exactly over the
rank-one directions inside a single task (``one_task``; it is 1 whenever m < d).

Unless an experiment varies it: d = 100, s = 5, T = 800, m = 25, sigma = 0.5, standard normal
features and heads (``diversity`` is the condition number of the head covariance, 1 = isotropic).
Every method runs with its defaults, except for iteration caps on the d = 100 grids (ANIL 300
outer steps, AltMin 100, AltMinGD 300, Burer-Monteiro 300, trace norm 200 FISTA steps; runs
that hit them say ``max_iter``), the trace-norm weight from the true sigma, and ANIL only up to
T = 1600 in ``error_vs_T``.

``scarce_data`` is the benchmark grid of Boursier, Konobeev and Flammarion (2022, "Trace norm
regularization and faster rates for multi-task learning with scarce data"): d = 100, s = 5,
sigma = 1, T = 100..6400 at m = 10 and m = 5, 10, 25 at T = 800. Its methods: ``meta_sp``
(:func:`metasp.fit`'s defaults), ``meta_sp_fixed_heads`` (``heads="fixed"``, the paper's
estimator), ``nuclear_norm_best`` (the trace norm at 2**k times its default weight, k = -4..2,
keeping the weight closest to the true subspace in hindsight: an oracle tuning; its
``wall_time`` covers every weight, ``n_iter`` and ``status`` are the chosen fit's, and the
extra column ``lambda_factor`` is the chosen 2**k), ``burer_monteiro``, ``altmin`` and
``single_task``, with iteration caps raised until the runs converge where they can (AltMin does
not always at m = 10, T <= 1600: it says ``max_iter`` there).
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path

import numpy as np

from . import baselines
from ._arrays import is_integer
from ._progress import progress as _progress
from ._solver import fit
from ._tasks import Tasks
from .kernels import gradient
from .metrics import frobenius_error, sin_angle

__all__ = ["EXPERIMENTS", "run"]

EXPERIMENTS = {
    "rip": "restricted-isometry constant of the task operator vs m (d=100, rank 10)",
    "rank": "rank misspecified by one: fit s-1, s, s+1 (T=200, m=10, d=50, s=3)",
    "meta_vs_anil": "Meta-SP vs MoM vs ANIL at m=10, T=50, d=50, s=3",
    "error_vs_T": "error vs number of tasks T=100..6400 at m=10 and m=25 (d=100, s=5)",
    "error_vs_m": "error vs samples per task m=5..30 at T=800 (d=100, s=5)",
    "noise": "error vs noise level sigma=1e-3..2 (T=800, m=25, d=100, s=5)",
    "non_gaussian": "Rademacher, uniform and Student-t features (T=800, m=25, d=100, s=5)",
    "low_diversity": "error vs head-covariance condition number 1..1000 (T=800, m=25)",
    "runtime": "wall time of every method vs T=100..6400 (m=25, d=100, s=5)",
    "scarce_data": "Boursier et al. 2022's grid: T=100..6400 at m=10, m=5..25 at T=800 (sigma=1)",
}

COLUMNS = ["experiment", "method", "T", "m", "d", "s", "s_fit", "sigma", "features", "diversity",
           "seed", "sin_angle", "frobenius_error", "fewshot_mse", "wall_time", "n_iter", "status",
           "warnings"]
# scarce_data: also the multiple of the default trace-norm weight that the oracle tuning chose
# (empty for the other methods).
SCARCE_COLUMNS = COLUMNS + ["lambda_factor"]
RIP_COLUMNS = ["experiment", "direction", "T", "m", "d", "rank", "seed", "trials", "delta",
               "wall_time"]

# Sample sizes of the held-out tasks used for the few-shot error.
NEW_TASKS = 100
QUERY_SAMPLES = 50

# ---------------------------------------------------------------------------------------------
# Simulation


def _features(kind: str, shape, rng) -> np.ndarray:
    """Features with mean 0 and variance 1, of the given distribution."""
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "rademacher":
        return rng.choice(np.array([-1.0, 1.0]), size=shape)
    if kind == "uniform":
        return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size=shape)
    if kind == "student_t":  # 5 degrees of freedom: heavy tails, variance 5/3
        return rng.standard_t(5, size=shape) * np.sqrt(3.0 / 5.0)
    raise ValueError(f"unknown feature distribution {kind!r}")


def _head_scales(s: int, condition: float) -> np.ndarray:
    """Standard deviations of the head coordinates: eigenvalues of the head covariance spread
    geometrically from 1 to 1/condition, normalised to mean 1 (same signal power)."""
    variances = np.geomspace(1.0, 1.0 / condition, s)
    return np.sqrt(variances * s / variances.sum())


def _simulate(setting: dict, seed: int):
    """Training tasks, truth, and held-out few-shot tasks for one setting and seed."""
    T, m, d, s = setting["T"], setting["m"], setting["d"], setting["s"]
    sigma, kind = setting["sigma"], setting["features"]
    rng = np.random.default_rng([seed, setting["index"]])
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    scales = _head_scales(s, setting["diversity"])

    def tasks(count, samples):
        W = rng.standard_normal((count, s)) * scales
        X = _features(kind, (count, samples, d), rng)
        y = np.einsum("tmd,td->tm", X, W @ B) + sigma * rng.standard_normal((count, samples))
        return X, y, W

    X, y, W = tasks(T, m)
    shots = 2 * s
    X_new, y_new, _ = tasks(NEW_TASKS, shots + QUERY_SAMPLES)
    return {
        "tasks": Tasks.from_array(X, y), "B": np.ascontiguousarray(B), "Theta": W @ B,
        "new": (X_new[:, :shots], y_new[:, :shots], X_new[:, shots:], y_new[:, shots:]),
    }


def _fewshot_mse(result, new) -> float:
    """Mean squared error on the query samples of new tasks, each head fitted by least squares
    on the task's support samples in the learned subspace (the paper's adaptation)."""
    X_support, y_support, X_query, y_query = new
    heads = np.linalg.pinv(X_support @ result.B.T) @ y_support[:, :, None]
    predictions = (X_query @ result.B.T @ heads)[:, :, 0]
    return float(np.mean((predictions - y_query) ** 2))


# ---------------------------------------------------------------------------------------------
# Methods under one calling convention: (tasks, s, seed, setting, B_true, options) -> result


def _call(method, tasks, s, seed, setting, B_true, options):
    if method == "meta_sp":
        return fit(tasks, None, s, random_state=seed, **options)
    if method == "meta_sp_fixed_heads":
        return fit(tasks, None, s, random_state=seed, heads="fixed", **options)
    if method == "nuclear_norm_best":
        return _nuclear_norm_best(tasks, s, seed, setting["sigma"], B_true, options)
    if method == "anil_2nd":
        return baselines.anil(tasks, None, s, order=2, random_state=seed, **options)
    baseline = baselines.BASELINES[method]
    if baseline.needs_truth:
        options = {"B_true": B_true, **options}
    if method == "nuclear_norm":
        # The default weight with the known noise level, as in the trace-norm literature's
        # simulations (estimating it would add a Meta-SP fit to every run).
        options = {"sigma": setting["sigma"], **options}
    seed = {"random_state": seed} if baseline.seeded else {}
    return baseline.function(tasks, None, s, **seed, **options)


# The oracle-tuned trace norm tries these multiples of the default weight (from the true sigma).
# On the scarce-data grid the best was 1/8 to 1 (1/8 in 2 of 21 runs, where 1/16 down to 1/128
# were worse), and 4 zeroes the solution below m = 25: 1/16 and 4 keep the best one interior.
LAMBDA_FACTORS = tuple(2.0**k for k in range(-4, 3))


def _nuclear_norm_best(tasks, s, seed, sigma, B_true, options):
    """The trace norm at every weight of LAMBDA_FACTORS times the default one, keeping the fit
    closest to the true subspace: tuned in hindsight, an oracle that no choice of weight from
    the data can beat on this grid.

    The result is the chosen fit (its ``n_iter`` and ``status``), with ``history["lambda_factor"]``
    the chosen multiple.
    """
    if B_true is None:
        raise ValueError("nuclear_norm_best needs the true subspace (s_fit == s)")
    base = baselines.default_lambda(tasks, sigma)
    # Weights at or above ||[X_t^T y_t / m_t]_t||_2 / sqrt(T), the size of the loss's gradient
    # at 0, have the solution 0, which has no subspace: skip them.
    moments = gradient(tasks, np.zeros((tasks.n_tasks, tasks.n_features))).G
    zero_above = np.linalg.norm(moments, 2) / np.sqrt(tasks.n_tasks)
    best = None
    for factor in LAMBDA_FACTORS:
        if base * factor >= zero_above:
            continue
        result = baselines.nuclear_norm(tasks, None, s, lam=base * factor, random_state=seed,
                                        **options)
        angle = sin_angle(result.B, B_true)
        if best is None or angle < best[0]:
            best = (angle, factor, result)
    if best is None:
        raise ValueError(f"every weight of the grid zeroes the solution (sigma = {sigma})")
    _, factor, result = best
    result.history["lambda_factor"] = np.array([factor])
    return result


ALL_METHODS = ("meta_sp", "altmin", "altmin_gd", "burer_monteiro", "nuclear_norm", "mom",
               "single_task", "anil", "oracle")


def _evaluate(method, options, data, setting, seed) -> dict:
    s_fit = setting["s_fit"]
    B_true = data["B"]
    with warnings.catch_warnings(record=True) as caught:
        # A method that does not converge or diverges is an experimental outcome: record it.
        warnings.simplefilter("always")
        start = time.perf_counter()
        result = _call(method, data["tasks"], s_fit, seed, setting,
                       B_true if s_fit == setting["s"] else None, options)
        wall_time = time.perf_counter() - start
    smaller, larger = (result.B, B_true) if s_fit <= setting["s"] else (B_true, result.B)
    row = {key: setting[key] for key in ("T", "m", "d", "s", "s_fit", "sigma", "features",
                                         "diversity")}
    row.update(
        method=method, seed=seed, sin_angle=sin_angle(smaller, larger),
        frobenius_error=frobenius_error(result.Theta, data["Theta"]),
        fewshot_mse=_fewshot_mse(result, data["new"]), wall_time=wall_time,
        n_iter=result.n_iter, status=result.status,
        warnings=";".join(sorted({w.category.__name__ for w in caught})),
    )
    if "lambda_factor" in result.history:  # nuclear_norm_best's chosen weight
        row["lambda_factor"] = float(result.history["lambda_factor"][0])
    return row


def _settings(grid: list[dict]) -> list[dict]:
    """Complete each setting with the defaults of the literature's grid."""
    defaults = {"T": 800, "m": 25, "d": 100, "s": 5, "sigma": 0.5, "features": "gaussian",
                "diversity": 1.0}
    settings = []
    for index, values in enumerate(grid):
        setting = {**defaults, **values, "index": index}
        setting.setdefault("s_fit", setting["s"])
        settings.append(setting)
    return settings


def _run_methods(name, grid, methods, seeds, show, options=None):
    """Every method on every (setting, seed), one row at a time; ``methods`` may depend on the
    setting."""
    options = options or {}
    units = [(setting, seed) for setting in _settings(grid) for seed in seeds]
    try:  # import SciPy (for L-BFGS) now, so that its import time is not one run's wall time
        import scipy.optimize  # noqa: F401
    except ImportError:
        pass
    for setting, seed in _progress(units, total=len(units), desc=name, enable=show):
        data = _simulate(setting, seed)
        chosen = methods(setting) if callable(methods) else methods
        for method in chosen:
            row = _evaluate(method, options.get(method, {}), data, setting, seed)
            yield {"experiment": name, **row}


# ---------------------------------------------------------------------------------------------
# The experiments: each returns (rows, columns, plot specification)

# Caps that keep the slow baselines within the time budget on the d=100 grids; a run that hits
# one is recorded with status "max_iter" (and a ConvergenceWarning in the warnings column).
_GRID_OPTIONS = {"anil": {"max_iter": 300}, "anil_2nd": {"max_iter": 300},
                 "altmin": {"max_iter": 100}, "altmin_gd": {"max_iter": 300},
                 "burer_monteiro": {"max_iter": 300}, "nuclear_norm": {"max_iter": 200}}
# ANIL's outer loop is the slowest method by far; the T grid runs it up to this many tasks.
_ANIL_MAX_TASKS = 1600
# Quick versions: the same designs at this small size (a smoke test, not a result).
_QUICK = {"T": 40, "d": 10, "s": 2}


def _rip(quick, seeds, show):
    T_values = (_QUICK["T"],) if quick else (100, 800)
    m_values = (5, 20) if quick else (5, 10, 20, 50, 100, 200)
    d, rank = (_QUICK["d"], 2 * _QUICK["s"]) if quick else (100, 10)
    trials = 5 if quick else 50
    units = [(T, m, seed) for T in T_values for m in m_values for seed in seeds]

    def rows():
        for T, m, seed in _progress(units, total=len(units), desc="rip", enable=show):
            rng = np.random.default_rng([seed, T, m])
            start = time.perf_counter()
            X = rng.standard_normal((T, m, d))
            tasks = Tasks.from_array(X, np.zeros((T, m)))
            # Random rank-r directions spread over all tasks: ||A(Theta)||^2/||Theta||_F^2 - 1.
            ratios = []
            for _ in range(trials):
                Theta = rng.standard_normal((T, rank)) @ rng.standard_normal((rank, d))
                energy = np.sum(gradient(tasks, Theta).task_loss)  # sum_t ||X_t theta_t||^2/m
                ratios.append(energy / np.sum(Theta**2) - 1.0)
            spread = float(np.max(np.abs(ratios)))
            # Directions inside one task (rank 1): exact, from the extreme eigenvalues of
            # X_t^T X_t / m; with m < d the smallest is 0.
            small = X @ X.transpose(0, 2, 1) if m <= d else X.transpose(0, 2, 1) @ X
            eigenvalues = np.linalg.eigvalsh(small) / m
            lowest = 0.0 if m < d else eigenvalues[:, 0].min()
            one_task = float(max(eigenvalues[:, -1].max() - 1.0, 1.0 - lowest))
            wall_time = time.perf_counter() - start
            for direction, delta, count in (("random_rank_r", spread, trials),
                                            ("one_task", one_task, T)):
                yield {"experiment": "rip", "direction": direction, "T": T, "m": m, "d": d,
                       "rank": rank, "seed": seed, "trials": count, "delta": delta,
                       "wall_time": wall_time}

    plot = {"x": "m", "y": ["delta"], "group": "direction", "panel": "T", "logx": True,
            "logy": True}
    return rows(), RIP_COLUMNS, plot


def _rank(quick, seeds, show):
    base = {"T": _QUICK["T"], "m": 10, "d": _QUICK["d"], "s": 3, "sigma": 0.1} if quick else \
        {"T": 200, "m": 10, "d": 50, "s": 3, "sigma": 0.1}
    grid = [{**base, "s_fit": base["s"] + shift} for shift in (-1, 0, 1)]
    options = {"altmin": {"max_iter": 30}} if quick else {}
    rows = _run_methods("rank", grid, ("meta_sp", "altmin", "mom"), seeds, show, options)
    return rows, COLUMNS, {"x": "s_fit", "y": ["sin_angle", "frobenius_error", "fewshot_mse"],
                           "categorical": True}


def _meta_vs_anil(quick, seeds, show):
    grid = [{"T": 50, "m": 10, "d": 50, "s": 3, "sigma": 0.1}]
    options = {}
    if quick:
        grid = [{**grid[0], **_QUICK}]
        options = {"anil": {"max_iter": 50}, "anil_2nd": {"max_iter": 50}}
    methods = ("meta_sp", "mom", "anil", "anil_2nd", "oracle")
    rows = _run_methods("meta_vs_anil", grid, methods, seeds, show, options)
    return rows, COLUMNS, {"x": "method", "y": ["sin_angle", "frobenius_error", "fewshot_mse"],
                           "categorical": True, "strip": True}


def _grid_methods(quick):
    if quick:
        return ("meta_sp", "altmin", "mom", "oracle")
    return lambda setting: tuple(
        method for method in ALL_METHODS
        if method != "anil" or setting["T"] <= _ANIL_MAX_TASKS
    )


def _quick_grid(grid, quick):
    """Quick runs: the first and last points of the design, scaled down to _QUICK sizes."""
    if not quick:
        return grid
    return [{**values, **_QUICK} for values in (grid[0], grid[-1])]


def _grid_experiment(name, grid, quick, seeds, show, plot, quick_grid=None):
    if quick:
        grid = quick_grid or _quick_grid(grid, quick)
    rows = _run_methods(name, grid, _grid_methods(quick), seeds, show, _GRID_OPTIONS)
    return rows, COLUMNS, plot


def _error_vs_T(quick, seeds, show):
    grid = [{"T": T, "m": m} for m in (10, 25) for T in (100, 400, 1600, 6400)]
    quick_grid = [{**_QUICK, "T": T, "m": m} for m in (10, 25) for T in (20, 60)]
    return _grid_experiment("error_vs_T", grid, quick, seeds, show, {
        "x": "T", "y": ["sin_angle", "fewshot_mse"], "panel": "m", "logx": True, "logy": True},
        quick_grid)


def _error_vs_m(quick, seeds, show):
    grid = [{"T": 800, "m": m} for m in (5, 10, 15, 20, 30)]
    return _grid_experiment("error_vs_m", grid, quick, seeds, show, {
        "x": "m", "y": ["sin_angle", "fewshot_mse"], "logy": True})


def _noise(quick, seeds, show):
    grid = [{"sigma": sigma} for sigma in (1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0)]
    return _grid_experiment("noise", grid, quick, seeds, show, {
        "x": "sigma", "y": ["sin_angle", "fewshot_mse"], "logx": True, "logy": True})


def _non_gaussian(quick, seeds, show):
    grid = [{"features": kind} for kind in ("gaussian", "rademacher", "uniform", "student_t")]
    return _grid_experiment("non_gaussian", grid, quick, seeds, show, {
        "x": "features", "y": ["sin_angle", "fewshot_mse"], "categorical": True, "logy": True})


def _low_diversity(quick, seeds, show):
    grid = [{"diversity": c} for c in (1.0, 10.0, 100.0, 1000.0)]
    return _grid_experiment("low_diversity", grid, quick, seeds, show, {
        "x": "diversity", "y": ["sin_angle", "fewshot_mse"], "logx": True, "logy": True})


def _runtime(quick, seeds, show):
    if quick:
        grid = [{**_QUICK, "T": T} for T in (20, 60)]
        methods = ("meta_sp", "altmin", "mom", "single_task", "oracle")
    else:
        grid = [{"T": T, "m": 25} for T in (100, 400, 1600, 6400)]
        methods = ALL_METHODS + ("anil_2nd",)
    rows = _run_methods("runtime", grid, methods, seeds, show, _GRID_OPTIONS)
    return rows, COLUMNS, {"x": "T", "y": ["wall_time", "sin_angle"], "logx": True,
                           "logy": True}


# Caps of the scarce-data grid, raised until the runs converge where they can: the trace norm's
# FISTA needs up to ~800 steps at its smallest weights; Burer-Monteiro ~15000 L-BFGS steps at
# T <= 400, m = 10. AltMin converges at T = 6400 and at m = 5 or 25, but at m = 10 it hit 1000
# alternations at T <= 400 and in 1 of 3 seeds at T = 800 and 1600 (its relative change stays
# near 1e-3, at 0.01-0.06 s per alternation); its sin angle has settled there for T >= 800.
_SCARCE_OPTIONS = {"altmin": {"max_iter": 1000}, "burer_monteiro": {"max_iter": 30000},
                   "nuclear_norm_best": {"max_iter": 3000}}
SCARCE_METHODS = ("meta_sp", "meta_sp_fixed_heads", "nuclear_norm_best", "burer_monteiro",
                  "altmin", "single_task")


def _scarce_data(quick, seeds, show):
    """The benchmark of Boursier, Konobeev, Flammarion (2022): d = 100, s = 5, sigma = 1, T from
    100 to 6400 at m = 10 and m from 5 to 25 at T = 800."""
    if quick:
        base, T_values, m_values, shared_T = {**_QUICK, "sigma": 1.0}, (20, 60), (5,), 60
    else:
        base, T_values, m_values, shared_T = ({"d": 100, "s": 5, "sigma": 1.0},
                                              (100, 400, 800, 1600, 6400), (5, 25), 800)
    # (T = shared_T, m = 10) belongs to both designs: run once, plotted in both panels.
    grid = ([{**base, "T": T, "m": 10} for T in T_values]
            + [{**base, "T": shared_T, "m": m} for m in m_values])
    rows = _run_methods("scarce_data", grid, SCARCE_METHODS, seeds, show, _SCARCE_OPTIONS)
    rows = ({"lambda_factor": "", **row} for row in rows)
    plot = {"y": ["sin_angle"], "views": [{"x": "T", "where": {"m": 10}, "logx": True},
                                          {"x": "m", "where": {"T": shared_T}}]}
    return rows, SCARCE_COLUMNS, plot


_RUNNERS = {
    "rip": _rip, "rank": _rank, "meta_vs_anil": _meta_vs_anil, "error_vs_T": _error_vs_T,
    "error_vs_m": _error_vs_m, "noise": _noise, "non_gaussian": _non_gaussian,
    "low_diversity": _low_diversity, "runtime": _runtime, "scarce_data": _scarce_data,
}

# Repeats per setting of the full runs, sized to the 20-minute budget (quick runs: 1).
_DEFAULT_SEEDS = {"rip": 5, "rank": 10, "meta_vs_anil": 20, "error_vs_T": 4, "error_vs_m": 5,
                  "noise": 5, "non_gaussian": 5, "low_diversity": 4, "runtime": 2,
                  "scarce_data": 3}


# ---------------------------------------------------------------------------------------------
# Output


def _write_csv(path: Path, rows, columns: list[str]) -> list[dict]:
    """Write each row as soon as it exists (a long run can be watched, and survives a crash
    up to the last run); returns the rows."""
    written = []
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _format(row[key]) for key in columns})
            handle.flush()
            written.append(row)
    return written


def _format(value):
    if isinstance(value, float):
        return repr(value)
    return value


def _plot(path: Path, name: str, rows: list[dict], spec: dict) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    group = spec.get("group", "method")
    views = _views(rows, spec)
    metrics = spec["y"]
    figure = Figure(figsize=(4.2 * len(views) + 1.8, 3.2 * len(metrics)), layout="constrained")
    axes = figure.subplots(len(metrics), len(views), squeeze=False)
    groups = list(dict.fromkeys(row[group] for row in rows))
    for column, view in enumerate(views):
        where = view.get("where", {})
        subset = [row for row in rows if all(row[key] == value for key, value in where.items())]
        xs = list(dict.fromkeys(row[view["x"]] for row in subset))
        if not spec.get("categorical"):
            xs = sorted(xs)
        for line, metric in enumerate(metrics):
            ax = axes[line, column]
            for index, label in enumerate(groups):
                # Fixed style per method, so a method has the same colour in every panel.
                style = {"color": f"C{index % 10}", "linestyle": "-" if index < 10 else "--"}
                _draw_group(ax, subset, spec, view["x"], group, label, xs, metric, style)
            ax.set_xlabel(view["x"])
            ax.set_ylabel(metric)
            if spec.get("categorical"):
                ax.set_xticks(range(len(xs)), [str(x) for x in xs],
                              rotation=30 if len(xs) > 4 else 0)
            elif view.get("logx"):
                ax.set_xscale("log")
            if _log_y(spec, metric):
                ax.set_yscale("log")
            if where:
                ax.set_title(", ".join(f"{key} = {value}" for key, value in where.items()))
            ax.grid(True, alpha=0.3)
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        ordered = [label for label in map(str, groups) if label in legend]
        figure.legend([legend[label] for label in ordered], ordered, loc="outside right center",
                      fontsize="small")
    figure.suptitle(f"{name}: median over seeds, band = 25-75%" if not spec.get("strip")
                    else f"{name}: every seed (dots) and median (bar)")
    from ._io import atomic_write

    with atomic_write(path) as file:  # never a truncated image
        figure.savefig(file, dpi=110, format=path.suffix.lstrip(".") or "png")


def _views(rows, spec) -> list[dict]:
    """The plot's columns, each ``{"x", "where", "logx"}``: the rows matching ``where`` against
    column ``x``. ``spec["views"]`` lists them (designs with different x axes), ``spec["panel"]``
    makes one per value of that column, and otherwise there is one of every row."""
    if "views" in spec:
        return spec["views"]
    logx = spec.get("logx", False)
    if "panel" in spec:
        return [{"x": spec["x"], "where": {spec["panel"]: value}, "logx": logx}
                for value in sorted({row[spec["panel"]] for row in rows})]
    return [{"x": spec["x"], "where": {}, "logx": logx}]


def _log_y(spec, metric) -> bool:
    return spec.get("logy") or metric in ("sin_angle", "frobenius_error", "wall_time")


def _draw_group(ax, rows, spec, x_key, group, label, xs, metric, style):
    positions, medians, low, high = [], [], [], []
    for index, x in enumerate(xs):
        values = np.array([row[metric] for row in rows
                           if row[group] == label and row[x_key] == x], dtype=float)
        values = values[np.isfinite(values)]
        if _log_y(spec, metric):
            values = values[values > 1e-12]  # the oracle's exact subspace has sin angle ~1e-16
        if values.size == 0:
            continue
        if spec.get("strip"):
            ax.scatter(np.full(values.size, index), values, s=10, alpha=0.5,
                       color=style["color"])
            ax.hlines(np.median(values), index - 0.3, index + 0.3, color="k")
            continue
        positions.append(index if spec.get("categorical") else x)
        medians.append(np.median(values))
        low.append(np.quantile(values, 0.25))
        high.append(np.quantile(values, 0.75))
    if positions:
        ax.plot(positions, medians, marker="o", markersize=3, label=str(label), **style)
        ax.fill_between(positions, low, high, alpha=0.15, color=style["color"])


def run(name, *, quick=False, seeds=None, out="results", progress=True, plot=True):
    """Run one experiment; write its CSV (one row per run) and, with matplotlib, a PNG plot.

    Parameters
    ----------
    name : str
        One of the keys of :data:`EXPERIMENTS` (``python -m metasp experiment --list``).
    quick : bool, default False
        A small version that runs in a few seconds (a smoke test); the results are not
        meaningful.
    seeds : int, optional
        Repeats per setting (seeds 0 .. seeds-1). Default: 1 with ``quick``, else the
        experiment's own default (2 to 20, sized to the time budget).
    out : str or path-like, default "results"
        Folder for ``<name>.csv`` and ``<name>.png`` (created if missing).
    progress : bool, default True
        Show a progress bar on stderr (tqdm when installed).
    plot : bool, default True
        Write the PNG (when matplotlib is installed).

    Returns
    -------
    dict
        ``{"csv": Path}``, plus ``"png": Path`` when the plot was written.

    Examples
    --------
    >>> import tempfile
    >>> from metasp import experiments
    >>> sorted(experiments.EXPERIMENTS)[:3]
    ['error_vs_T', 'error_vs_m', 'low_diversity']
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     paths = experiments.run("rank", quick=True, out=folder)
    """
    if name not in _RUNNERS:
        raise ValueError(
            f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)} "
            "(python -m metasp experiment --list)"
        )
    if seeds is None:
        seeds = 1 if quick else _DEFAULT_SEEDS[name]
    if not is_integer(seeds) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer; got {seeds!r}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows, columns, spec = _RUNNERS[name](bool(quick), range(int(seeds)), bool(progress))
    paths = {"csv": folder / f"{name}.csv"}
    rows = _write_csv(paths["csv"], rows, columns)
    if not plot:
        return paths
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{name}: plot skipped (matplotlib is not installed; "
              'pip install "metasp[plot]" to get it)')
    else:
        paths["png"] = folder / f"{name}.png"
        _plot(paths["png"], name, rows, spec)
    return paths
