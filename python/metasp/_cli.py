"""Command line: ``python -m metasp COMMAND`` (also installed as ``metasp``)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from ._demo import add_demo_command


def _add_experiment_command(commands):
    parser = commands.add_parser(
        "experiment", help="run one of the paper's experiments; writes a CSV and a PNG")
    parser.add_argument("name", nargs="?", help="experiment name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--seeds", type=int, default=None, help="repeats per setting")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.set_defaults(run=_run_experiment)


def _run_experiment(args, parser):
    from . import experiments

    if args.list:
        for name, description in experiments.EXPERIMENTS.items():
            print(f"{name:<24} {description}")
        return 0
    if args.name is None:
        parser.error("experiment: give a NAME or --list")
    experiments.run(args.name, quick=args.quick, seeds=args.seeds, out=args.out)
    return 0


def _user_errors(run):
    """Report warnings and bad input as one line each on stderr (exit status 1 on an error),
    not as tracebacks."""

    def guarded(args, parser):
        prefix = f"{parser.prog} {args.command}"

        def show(message, category, *where, **_):
            print(f"{prefix}: warning: {message}", file=sys.stderr)

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                return run(args, parser)
            except (ValueError, TypeError, ImportError, OSError) as error:
                print(f"{prefix}: error: {error}", file=sys.stderr)
                return 1

    return guarded


def _read_table(path):
    """A pandas DataFrame from CSV (any compression pandas reads) or Parquet."""
    from ._tasks import _import_pandas

    pd = _import_pandas(f"reading {path}")
    if str(path).lower().endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path)
        except ImportError as error:
            raise ImportError('reading Parquet needs pyarrow (pip install "metasp[parquet]"): '
                              f"{error}") from None
    return pd.read_csv(path)


def _design(values, preprocessing: dict):
    """Model features from raw feature values: the same steps at fit and at predict time."""
    X = np.asarray(values, dtype=np.float64)
    scaling = preprocessing.get("standardize")
    if scaling is not None:
        X = (X - np.asarray(scaling["mean"])) / np.asarray(scaling["scale"])
    if preprocessing.get("intercept"):
        X = np.column_stack([X, np.ones(X.shape[0])])
    return X


_FIT_HELP = """\
Fit Meta-SP to a long-format table: one row per sample, a column naming the task of each row
(--group), a numeric target (--target) and numeric features (--features, default: all other
numeric columns). By default the features are standardised (training mean and standard deviation)
and a constant column is added, so that every task gets its own intercept; both are saved in
the model and replayed by `predict`. Without --rank, the rank is chosen by `metasp.select_rank`
(cross-validation within tasks over ranks 1..min(--max-rank, T, d)). The model file (.npz, no pickle)
keeps the feature, group and target column names for `predict`.
"""


def _add_fit_command(commands):
    parser = commands.add_parser(
        "fit", help="fit a model to a CSV or Parquet table of many small tasks",
        description=_FIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="CSV (optionally compressed) or Parquet")
    parser.add_argument("--group", required=True, metavar="COL", help="task label column")
    parser.add_argument("--target", required=True, metavar="COL", help="target column")
    parser.add_argument("--features", nargs="+", metavar="COL",
                        help="feature columns (default: every other numeric column)")
    parser.add_argument("--rank", type=int, metavar="S",
                        help="rank of the shared subspace (default: chosen by select_rank)")
    parser.add_argument("--max-rank", type=int, default=10, metavar="S",
                        help="largest rank tried when choosing it (default: 10)")
    parser.add_argument("--cv", type=int, default=5,
                        help="folds for choosing the rank (default: 5)")
    parser.add_argument("--rank-holdout", choices=["samples", "tasks"], default="samples",
                        help="choose the rank by holding out samples within tasks, or whole "
                             "tasks scored by few-shot MSE with 3, 5 and 8 support rows "
                             "(select_rank's holdout; default: samples)")
    parser.add_argument("--min-samples", type=int, default=1, metavar="N",
                        help="drop tasks with fewer rows, with a warning (default: 1)")
    parser.add_argument("--dropna", action="store_true",
                        help="drop rows with missing values, with a warning (default: error)")
    parser.add_argument("--no-standardize", dest="standardize", action="store_false",
                        help="use the features as they are")
    parser.add_argument("--no-intercept", dest="intercept", action="store_false",
                        help="do not add a constant feature")
    parser.add_argument("--max-iter", type=int, default=1000,
                        help="solver iteration cap (default: 1000)")
    parser.add_argument("--tol", type=float, default=1e-10,
                        help="solver tolerance on the relative change (default: 1e-10)")
    parser.add_argument("--random-state", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    parser.set_defaults(run=_user_errors(_run_fit))


def _run_fit(args, parser):
    from . import Tasks, fit

    table = _read_table(args.file)
    tasks = Tasks.from_frame(table, group=args.group, target=args.target,
                             features=args.features, min_samples=args.min_samples,
                             dropna=args.dropna)
    features = [str(name) for name in tasks.feature_names]
    preprocessing = {"standardize": None, "intercept": bool(args.intercept)}
    if args.standardize:
        scale = tasks.X.std(axis=0)
        scale[scale == 0] = 1.0  # a constant column stays constant instead of dividing by 0
        preprocessing["standardize"] = {"mean": tasks.X.mean(axis=0), "scale": scale}
    names = features + (["(intercept)"] if args.intercept else [])
    tasks = Tasks(_design(tasks.X, preprocessing), tasks.y, tasks.offsets, labels=tasks.labels,
                  feature_names=names)
    print(f"{tasks.n_tasks} tasks, {tasks.n_samples} rows, {len(features)} features "
          f"({', '.join(features)}){' + intercept' if args.intercept else ''}")
    options = {"max_iter": args.max_iter, "tol": args.tol, "random_state": args.random_state}
    selection = None
    if args.rank is None:
        from ._select_rank import select_rank

        if args.max_rank < 1:
            raise ValueError(f"--max-rank must be at least 1; got {args.max_rank}")
        ranks = range(1, min(args.max_rank, tasks.n_tasks, tasks.n_features) + 1)
        selection = select_rank(tasks, ranks=ranks, cv=args.cv, holdout=args.rank_holdout,
                                verbose=True, **options)
        print(selection)
        rank = selection.best_rank
    else:
        rank = args.rank
    result = fit(tasks, s=rank, **options)
    result.metadata = {
        "written_by": "python -m metasp fit",
        "source": os.path.basename(args.file),
        "group": str(args.group),
        "target": str(args.target),
        "features": features,
        "model_features": names,
        "preprocessing": preprocessing,
        "rank": rank,
        "rank_selection": None if selection is None else selection.table(),
        "fit_options": options,
        "training_groups": [str(label) for label in tasks.labels.tolist()],
    }
    result.save(args.out)
    print(f"rank {rank}: {result.status} after {result.n_iter} iterations; training loss "
          f"(mean over tasks of the mean squared residual) {result.history['loss'][-1]:.4g}")
    print(f"saved {args.out}")
    return 0


_PREDICT_HELP = """\
Predict the tasks (groups) of FILE with a model written by `fit`.

Each group is a task. Its head is adapted in the learned subspace on its rows that have a target
value (the support rows; with --shots K, only the first K of them in file order), and then all of
its rows are predicted. A group without any target value that was a training task uses its
fitted head; any other group without a target value is an error (nothing to adapt on).
The output is FILE with two more columns: `prediction`, and `support` (True for the rows used to
adapt). When rows outside the support have a target (for example with --shots), their mean
squared error is printed: a few-shot evaluation on your own data.
"""


def _add_predict_command(commands):
    parser = commands.add_parser(
        "predict", help="predict new tasks in a table with a model written by fit",
        description=_PREDICT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="model file written by fit")
    parser.add_argument("file", metavar="FILE", help="CSV (optionally compressed) or Parquet")
    parser.add_argument("--group", metavar="COL",
                        help="task label column (default: the one the model was fitted with)")
    parser.add_argument("--target", metavar="COL",
                        help="target column (default: the one the model was fitted with)")
    parser.add_argument("--shots", type=int, metavar="K",
                        help="adapt each task on its first K rows with a target only")
    parser.add_argument("--prior", choices=["empirical", "ridge", "none"],
                        help="prior of the new heads (default: empirical; see "
                             "MetaSPResult.adapt)")
    parser.add_argument("--ridge", type=float, help="ridge strength for --prior ridge")
    parser.add_argument("--out", required=True, metavar="PRED.csv", help="CSV file to write")
    parser.set_defaults(run=_user_errors(_run_predict))


def _run_predict(args, parser):
    from . import load

    result = load(args.model)
    meta = result.metadata
    if meta.get("written_by") != "python -m metasp fit":
        raise ValueError(f"{args.model} was not written by `python -m metasp fit`, so it does "
                         "not know its columns; use metasp.load and MetaSPResult.adapt in Python")
    if args.shots is not None and args.shots < 1:
        raise ValueError(f"--shots must be at least 1; got {args.shots}")
    group, target = args.group or meta["group"], args.target or meta["target"]
    table = _read_table(args.file)
    absent = [c for c in [group, *meta["features"]] if c not in table.columns]
    if absent:
        raise ValueError(f"{args.file} lacks the columns {absent} that the model needs")
    for column in ("prediction", "support"):
        if column in table.columns:
            raise ValueError(f"{args.file} already has a column {column!r}; rename it")
    missing = table[[group, *meta["features"]]].isna().sum()
    if missing.any():
        counts = {str(c): int(n) for c, n in missing.items() if n}
        raise ValueError(f"missing group or feature values (count per column: {counts}); "
                         "those rows cannot be predicted: drop or impute them")
    X = _design(table[meta["features"]].to_numpy(dtype=np.float64), meta["preprocessing"])
    y = (table[target].to_numpy(dtype=np.float64) if target in table.columns
         else np.full(len(table), np.nan))
    trained = {label: t for t, label in enumerate(meta["training_groups"])}
    prediction = np.empty(len(table))
    support = np.zeros(len(table), dtype=bool)
    adapt = {"prior": args.prior, "ridge": args.ridge}
    counts = {"adapted": 0, "trained": 0}
    unpredictable = []
    for label, rows in table.groupby(group, sort=False).indices.items():
        labelled = rows[~np.isnan(y[rows])]
        if args.shots is not None:
            labelled = labelled[:args.shots]
        if labelled.size:
            head = result.adapt(X[labelled], y[labelled], **adapt)
            support[labelled] = True
            counts["adapted"] += 1
        elif str(label) in trained:
            head = result.W[trained[str(label)]]
            counts["trained"] += 1
        else:
            unpredictable.append(label)
            continue
        prediction[rows] = result.predict(X[rows], head)
    if unpredictable:
        shown = ", ".join(repr(label) for label in unpredictable[:5])
        raise ValueError(
            f"{len(unpredictable)} groups have no target value to adapt on and were not "
            f"training tasks (for example {shown}); give each at least one row with a target "
            f"in column {target!r}, or remove them"
        )
    table = table.assign(prediction=prediction, support=support)
    table.to_csv(args.out, index=False)
    print(f"{len(table)} rows of {counts['adapted'] + counts['trained']} tasks: "
          f"{counts['adapted']} adapted on {int(support.sum())} support rows, "
          f"{counts['trained']} with their training heads")
    scored = ~support & ~np.isnan(y)
    if scored.any():
        mse = np.mean((y[scored] - prediction[scored]) ** 2)
        print(f"MSE on the {int(scored.sum())} rows with a target outside the support: {mse:.4g}")
    print(f"wrote {args.out}")
    return 0


def main(argv=None):
    """Run the ``metasp`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m metasp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_experiment_command(commands)
    _add_fit_command(commands)
    _add_predict_command(commands)
    add_demo_command(commands)
    args = parser.parse_args(argv)
    return args.run(args, parser)
