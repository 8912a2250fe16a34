"""Command line: ``python -m metasp COMMAND`` (also installed as ``metasp``).

Every command reports a problem as one line on stderr, ``python -m metasp COMMAND: error:
...``, in the command line's own terms (``--dropna``, not ``dropna=True``), and exits with
status 2 for a bad argument (as argparse does for the arguments it checks itself) or 1 for
input that cannot be used; each warning is one line too. Arguments, output paths included, are
checked before any work is done, and every output file is written atomically
(:func:`metasp._io.atomic_write`): an interrupted command never leaves half a file.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import math
import os
import re
import sys
import warnings

import numpy as np

from ._demo import add_demo_command, run_demo
from ._io import atomic_write
from ._tasks import import_pandas, is_numeric_column
from ._usage import UsageError, check_output, check_output_folder


def _guard(parser, run):
    """Make ``run(args, parser)`` the command of ``parser``, with warnings and errors reported
    as one line each in command-line terms, not as tracebacks."""
    prefix = parser.prog

    def guarded(args, _top_parser):
        def say(kind, message):
            text = " ".join(_speak_cli(str(message), parser).split())  # one line
            print(f"{prefix}: {kind}: {text}", file=sys.stderr)

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_, **__: say("warning", message)
            try:
                return run(args, parser)
            except UsageError as error:
                say("error", error)
                return 2
            except (ValueError, TypeError, ImportError, OSError) as error:
                say("error", error)
                return 1
            except KeyboardInterrupt:
                say("error", "interrupted; no output file was left half-written")
                return 130

    parser.set_defaults(run=guarded)


def _speak_cli(message: str, parser) -> str:
    """Name the command's options the way they are typed: a message from the library that
    says ``max_iter=5`` or ``dropna=True`` says ``--max-iter 5`` or ``--dropna``."""
    for action in parser._actions:
        options = [option for option in action.option_strings if option.startswith("--")]
        if not options or action.dest == "help":
            continue
        option, name = options[0], re.escape(action.dest)
        before = r"(?<![\w.\-/\\'\"])"  # not inside a word, path or quoted name
        if isinstance(action, argparse._StoreTrueAction):
            message = re.sub(rf"{before}{name}=True\b", option, message)
        elif isinstance(action, argparse._StoreFalseAction):
            message = re.sub(rf"{before}{name}=False\b", option, message)
        else:
            message = re.sub(rf"{before}{name}=(['\"])([^'\"]*)\1", rf"{option} \2", message)
            message = re.sub(rf"{before}{name}=", f"{option} ", message)
            if "_" in action.dest:
                message = re.sub(rf"{before}{name}\b", option, message)
    return message


def _at_least(value, minimum, option: str, what: str = "") -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be at least {minimum}{what}; got {value}")


def _add_experiment_command(commands):
    parser = commands.add_parser(
        "experiment", help="run one of the paper's experiments; writes a CSV and a PNG")
    parser.add_argument("name", nargs="?", help="experiment name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--seeds", type=int, default=None, help="repeats per setting")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    _guard(parser, _run_experiment)


def _run_experiment(args, parser):
    from . import experiments

    if args.list:
        for name, description in experiments.EXPERIMENTS.items():
            print(f"{name:<24} {description}")
        return 0
    if args.name is None:
        raise UsageError("give an experiment NAME, or --list to see them")
    if args.name not in experiments.EXPERIMENTS:
        raise UsageError(f"unknown experiment {args.name!r}; choose one of: "
                         f"{', '.join(experiments.EXPERIMENTS)} (see --list)")
    _at_least(args.seeds, 1, "--seeds")
    check_output_folder(args.out, "--out")
    experiments.run(args.name, quick=args.quick, seeds=args.seeds, out=args.out)
    return 0


def _read_table(path):
    """A pandas DataFrame from CSV (any compression pandas reads) or Parquet, with at least
    one row; a file that cannot be read as a table is a ValueError that names it."""
    pd = import_pandas(f"reading {path}")
    parquet = str(path).lower().endswith((".parquet", ".pq"))
    try:
        table = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except ImportError as error:
        raise ImportError('reading Parquet needs pyarrow (pip install "metasp[parquet]"): '
                          f"{error}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty: a table needs a header row naming its columns and "
                         "one row per sample") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, OSError) as error:
        kind = "Parquet" if parquet else "CSV"
        raise ValueError(f"cannot read {path} as a {kind} table: {error}") from None
    if len(table) == 0:
        raise ValueError(f"{path} has no rows, only a header ({len(table.columns)} columns)")
    if not table.columns.is_unique:
        duplicated = table.columns[table.columns.duplicated()].unique().tolist()
        raise ValueError(f"{path} has more than one column named {duplicated}; rename them")
    return table.reset_index(drop=True)  # index = data row - 1, whatever was dropped later


def _require_columns(table, path, columns) -> None:
    """``columns``: (option, column) pairs that must be in the table."""
    for option, column in columns:
        if column not in table.columns:
            raise ValueError(f"{path} has no column {column!r} ({option}); its columns are "
                             f"{[str(c) for c in table.columns]}")


def _text_cells(column):
    """Where ``column`` holds something that is not a number (missing values are not)."""
    from pandas.api import types

    if is_numeric_column(column):
        return np.zeros(len(column), dtype=bool)
    if isinstance(column.dtype, types.CategoricalDtype):
        column = column.astype(object)  # categories that are numbers are numbers
    present = column.notna().to_numpy()
    if not (column.dtype == object or types.is_string_dtype(column)):
        return present  # dates, categories, complex numbers: not features as they are
    numbers = _to_numbers(column)
    return present & np.isnan(numbers)


def _holds_numbers(column) -> bool:
    """A numeric column, or a text column with at least one number in it."""
    if is_numeric_column(column):
        return True
    return bool((column.notna().to_numpy() & ~_text_cells(column)).any())


def _to_numbers(column) -> np.ndarray:
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _rows(mask) -> str:
    """'data row 7' or 'data row 7 and 3 more': rows counted from 1, header not counted."""
    rows = np.flatnonzero(mask)
    more = f" and {rows.size - 1} more" if rows.size > 1 else ""
    return f"data row {rows[0] + 1}{more}"


def _numeric_table(table, path, group, target, features, *, drop_text=False, dropna=False,
                   unlabelled=False):
    """The group, target and feature columns, every number column as float64, after the
    rows with text in a number column (``drop_text``) or a missing value (``dropna``) were
    dropped with a warning, or rejected with an error that names the file, column and row.
    ``unlabelled``: rows without a target are wanted (and the target column may be absent)."""
    numeric = [*([target] if target in table.columns else []), *features]
    text = {column: _text_cells(table[column]) for column in numeric}
    text = {column: mask for column, mask in text.items() if mask.any()}
    if text:
        if not drop_text:
            column, mask = next(iter(text.items()))
            value = table[column].to_numpy()[np.flatnonzero(mask)[0]]
            hint = (", or leave the column out of --features" if column != target else "")
            raise ValueError(
                f"{path}: column {column!r} must hold numbers but has {str(value)[:40]!r} in "
                f"{_rows(mask)}; fix those cells, or pass --drop-non-numeric to drop their "
                f"rows{hint}")
        rows = np.logical_or.reduce(list(text.values()))
        counts = {str(column): int(mask.sum()) for column, mask in text.items()}
        warnings.warn(f"dropped {int(rows.sum())} of {len(table)} rows of {path} with text in a "
                      f"number column (count per column: {counts}; --drop-non-numeric)", stacklevel=2)
        table = table[~rows]
    columns = [group, *([target] if target in table.columns else []), *features]
    table = table[columns].copy()
    for column in numeric:
        table[column] = _to_numbers(table[column])
    missing = table[[group, *(features if unlabelled else numeric)]].isna()
    rows = missing.any(axis=1).to_numpy()
    if rows.any():
        counts = {str(c): int(n) for c, n in missing.sum().items() if n}
        if not dropna:
            raise ValueError(
                f"{int(rows.sum())} of {len(table)} rows of {path} have missing values (count "
                f"per column: {counts}; first in data row {table.index[rows][0] + 1}); pass "
                "--dropna to drop those rows, or fill them in")
        warnings.warn(f"dropped {int(rows.sum())} of {len(table)} rows of {path} with missing "
                      f"values (count per column: {counts}; --dropna)", stacklevel=2)
        table = table[~rows]
    for column in numeric:
        infinite = np.isinf(table[column].to_numpy())
        if infinite.any():
            raise ValueError(f"{path}: column {column!r} has an infinite value in data row "
                             f"{table.index[infinite][0] + 1}"
                             + (f" and {int(infinite.sum()) - 1} more" if infinite.sum() > 1
                                else "") + "; replace or remove it")
    return table


# Support-set sizes of the few-shot score of --rank-holdout tasks.
_RANK_SHOTS = (3, 5, 8)

_FIT_HELP = """\
Fit Meta-SP to a long-format table: one row per sample, a column naming the task of each row
(--group), a numeric target (--target) and numeric features (--features, default: all other
numeric columns). A cell with text in a number column is an error that names its row (data rows
are counted from 1, the header not counted) unless --drop-non-numeric drops such rows; a missing
value is an error unless --dropna drops such rows. By default the features are standardised
(training mean and standard deviation) and a constant column is added, so that every task gets
its own intercept; both are saved in the model and replayed by `predict`.

Without --rank, the rank is chosen by `metasp.select_rank` (cross-validation within tasks over
ranks 1..min(--max-rank, T, d)), which prints each rank's held-out MSE. The rank marked
`<- best` is chosen by the one-standard-error rule: the smallest rank whose mean held-out MSE is
within one standard error (the sd over the folds / sqrt(folds)) of the lowest mean. Larger ranks
that do not predict measurably better are not worth their extra dimensions (they fit noise);
give --rank to override.

The model file (.npz, no pickle) keeps the feature, group and target column names for
`predict`. It is written only once the fit has succeeded, and atomically.

On a Dask cluster: with --dask-scheduler ADDRESS (a running scheduler) or --dask-workers N (a
local cluster of N worker processes), FILE may be a glob of CSV or Parquet files (quote it),
read with dask.dataframe; the tasks are co-located on the workers and fitted there by
`metasp.dask` (pip install "metasp[dask]"). Without --rank, the rank is then chosen by
held-out tasks (`metasp.dask.select_rank`, --rank-holdout tasks). The model holds no per-task
heads (they stay on the cluster), so `predict` adapts every group on its own rows.
--drop-non-numeric and --min-samples need the table in memory and are refused there.
"""


def _add_fit_command(commands):
    parser = commands.add_parser(
        "fit", help="fit a model to a CSV or Parquet table of many small tasks",
        description=_FIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="CSV (optionally compressed) or Parquet; "
                        "with --dask-scheduler or --dask-workers, a glob of such files")
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
    parser.add_argument("--rank-holdout", choices=["samples", "tasks"], default=None,
                        help="choose the rank by holding out samples within tasks, or whole "
                             "tasks scored by few-shot MSE with 3, 5 and 8 support rows "
                             "(select_rank's holdout; default: samples, or tasks on a Dask "
                             "cluster); either way the smallest rank within one standard "
                             "error of the best score")
    parser.add_argument("--min-samples", type=int, default=1, metavar="N",
                        help="drop tasks with fewer rows, with a warning (default: 1)")
    parser.add_argument("--dropna", action="store_true",
                        help="drop rows with missing values, with a warning (default: error)")
    parser.add_argument("--drop-non-numeric", action="store_true",
                        help="drop rows with text in a number column, with a warning (default: "
                             "error naming the row and column)")
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
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--dask-scheduler", metavar="ADDRESS",
                         help="fit on the Dask cluster of this scheduler (for example "
                              "tcp://10.0.0.5:8786) with metasp.dask")
    cluster.add_argument("--dask-workers", type=int, metavar="N",
                         help="fit with metasp.dask on a local Dask cluster of N worker "
                              "processes")
    _guard(parser, _run_fit)


def _on_dask(args) -> bool:
    return args.dask_scheduler is not None or args.dask_workers is not None


def _check_fit_arguments(args) -> None:
    _at_least(args.rank, 1, "--rank")
    _at_least(args.max_rank, 1, "--max-rank")
    _at_least(args.cv, 2, "--cv", " (folds)")
    _at_least(args.min_samples, 1, "--min-samples")
    _at_least(args.max_iter, 1, "--max-iter")
    _at_least(args.random_state, 0, "--random-state")
    if not (math.isfinite(args.tol) and args.tol >= 0):
        raise UsageError(f"--tol must be a non-negative number; got {args.tol}")
    _check_dask_arguments(args)
    if args.group == args.target:
        raise UsageError(f"--group and --target are the same column {args.group!r}")
    if args.features is not None:
        for role, column in (("--group", args.group), ("--target", args.target)):
            if column in args.features:
                raise UsageError(f"--features lists the {role} column {column!r}; a column is "
                                 "the task label, the target or a feature, not two of them")
        repeated = sorted({c for c in args.features if args.features.count(c) > 1})
        if repeated:
            raise UsageError(f"--features lists {repeated} more than once")
    check_output(args.out, "--out")


def _check_dask_arguments(args) -> None:
    """The Dask options, and the other options as far as a fit on a cluster takes them; fills
    in the default --rank-holdout."""
    if not _on_dask(args):
        args.rank_holdout = args.rank_holdout or "samples"
        return
    _at_least(args.dask_workers, 1, "--dask-workers")
    if args.dask_scheduler is not None and not args.dask_scheduler.strip():
        raise UsageError("--dask-scheduler needs the scheduler's address, for example "
                         "tcp://10.0.0.5:8786")
    refused = [option for option, used in (("--drop-non-numeric", args.drop_non_numeric),
                                           ("--min-samples", args.min_samples != 1)) if used]
    if refused:
        raise UsageError(f"{' and '.join(refused)} {'need' if len(refused) > 1 else 'needs'} "
                         "the table in memory: clean the files first, or fit without "
                         "--dask-scheduler and --dask-workers")
    if args.rank is None and args.rank_holdout == "samples":
        raise UsageError("--rank-holdout samples is not distributed: on a Dask cluster the "
                         "rank is chosen by held-out tasks (--rank-holdout tasks); or give "
                         "--rank")
    args.rank_holdout = "tasks"


def _features(table, args, numeric) -> list:
    """The feature columns: ``--features``, else every column besides the group and target
    for which ``numeric(column)`` holds (the others are left out with a warning)."""
    if args.features is not None:
        features = list(args.features)
        _require_columns(table, args.file, [("--features", column) for column in features])
        return features
    candidates = [c for c in table.columns if c not in (args.group, args.target)]
    features = [c for c in candidates if numeric(c)]
    skipped = [str(c) for c in candidates if c not in features]
    if skipped:
        warnings.warn(f"left out non-numeric columns {skipped}; encode them as numbers to use "
                      "them, or list the features with --features to silence this",
                      stacklevel=3)
    if not features:
        raise ValueError(f"{args.file} has no numeric column besides --group "
                         f"{args.group!r} and --target {args.target!r}")
    return features


def _fit_tasks(args):
    """The training tasks from the file, with the columns and rows that ``args`` ask for."""
    from . import Tasks

    table = _read_table(args.file)
    _require_columns(table, args.file, [("--group", args.group), ("--target", args.target)])
    # A column with any number in it is meant to be numeric: its text cells are errors
    # (below), not a reason to leave out the whole column.
    features = _features(table, args, lambda column: _holds_numbers(table[column]))
    table = _numeric_table(table, args.file, args.group, args.target, features,
                           drop_text=args.drop_non_numeric, dropna=args.dropna)
    sizes = table[args.group].value_counts(sort=False)
    small = sizes[sizes < args.min_samples]
    if len(small):
        shown = ", ".join(repr(label) for label in small.index[:5])
        warnings.warn(f"dropped {len(small)} of {len(sizes)} tasks with fewer than "
                      f"--min-samples {args.min_samples} rows ({int(small.sum())} rows in all; "
                      f"for example {shown})", stacklevel=2)
        table = table[~table[args.group].isin(small.index).to_numpy()]
    if len(table) == 0:
        raise ValueError(f"no rows of {args.file} are left after dropping rows and tasks; "
                         "check --dropna, --drop-non-numeric and --min-samples")
    tasks = Tasks.from_frame(table, group=args.group, target=args.target, features=features)
    return tasks, [str(name) for name in features]


def _check_scale(tasks, features, target, standardize) -> None:
    """Values so large that their squares overflow make the fit meaningless: name the column
    (``standardize``: computing its standard deviation already overflows)."""
    what = "standardisation overflows" if standardize else "their squares overflow in the fit"
    with np.errstate(over="ignore", invalid="ignore"):
        columns = [(name, tasks.X[:, j]) for j, name in enumerate(features)]
        for name, values in [*columns, (target, tasks.y)]:
            if name == target or not standardize:
                finite = np.isfinite(np.dot(values, values))
            else:
                finite = np.isfinite(values.mean()) and np.isfinite(values.std())
            if not finite:
                peak = f"{np.abs(values).max():.0e}".replace("e+", "e")
                raise ValueError(
                    f"column {name!r} has values near {peak}; "
                    + (what if name != target else "their squares overflow in the fit")
                    + f": rescale the column (for example divide it by {peak}) and fit again")


def _preprocessed_features(values, preprocessing: dict):
    """Model features from raw feature values: the same steps at fit and at predict time."""
    X = np.asarray(values, dtype=np.float64)
    scaling = preprocessing.get("standardize")
    if scaling is not None:
        X = (X - np.asarray(scaling["mean"])) / np.asarray(scaling["scale"])
    if preprocessing.get("intercept"):
        X = np.column_stack([X, np.ones(X.shape[0])])
    return X


def _explain_best(selection) -> str:
    """The one-standard-error rule behind the ``<- best`` mark, with this table's numbers."""
    folds = int((~np.isnan(selection.fold_mse[0])).sum())
    lowest = int(np.argmin(selection.mean_mse))
    mean = selection.mean_mse[lowest]
    error = selection.std_mse[lowest] / np.sqrt(folds)
    return (f"<- best: the smallest rank whose mean held-out MSE is within one standard error "
            f"of the lowest mean (rank {selection.ranks[lowest]}: {mean:.4f} + {error:.4f} = "
            f"{mean + error:.4f}; standard error = sd / sqrt({folds} folds)). Larger ranks do "
            "not predict measurably better; give --rank to override.")


def _run_fit(args, parser):
    _check_fit_arguments(args)
    if _on_dask(args):
        return _run_dask_fit(args)
    from . import Tasks, fit
    from ._select_rank import select_rank

    tasks, features = _fit_tasks(args)
    _check_scale(tasks, features, args.target, args.standardize)
    preprocessing = {"standardize": None, "intercept": bool(args.intercept)}
    if args.standardize:
        scale = tasks.X.std(axis=0)
        scale[scale == 0] = 1.0  # a constant column stays constant instead of dividing by 0
        preprocessing["standardize"] = {"mean": tasks.X.mean(axis=0), "scale": scale}
    names = features + (["(intercept)"] if args.intercept else [])
    tasks = Tasks(_preprocessed_features(tasks.X, preprocessing), tasks.y, tasks.offsets, labels=tasks.labels,
                  feature_names=names)
    _print_tasks(tasks, features, args.intercept)
    options = _fit_options(args)
    rank, selection = _choose_rank(tasks, args, select_rank, options, _check_rank_selection)
    result = fit(tasks, s=rank, **options)
    _save_fit(result, args, rank, selection, features, names, preprocessing,
              [str(label) for label in tasks.labels.tolist()])
    return 0


def _print_tasks(tasks, features, intercept) -> None:
    print(f"{tasks.n_tasks} tasks, {tasks.n_samples} rows, {len(features)} features "
          f"({', '.join(features)}){' + intercept' if intercept else ''}")


def _fit_options(args) -> dict:
    return {"max_iter": args.max_iter, "tol": args.tol, "random_state": args.random_state}


def _choose_rank(tasks, args, select_rank, options, check_selection=None):
    """``(rank, selection)``: --rank, or the rank ``select_rank`` chooses (``selection`` is
    None where --rank was given)."""
    upper = min(tasks.n_tasks, tasks.n_features)
    if args.rank is not None:
        if args.rank > upper:
            raise ValueError(f"--rank {args.rank} is too large for these data: the rank is at "
                             f"most min(tasks, model features) = {upper} ({tasks.n_tasks} "
                             f"tasks, {tasks.n_features} model features"
                             f"{' with the intercept' if args.intercept else ''}); give --rank "
                             f"{upper} or less")
        return args.rank, None
    if check_selection is not None:
        check_selection(tasks, args)
    ranks = range(1, min(args.max_rank, upper) + 1)
    holdout = {"holdout": args.rank_holdout}
    if args.rank_holdout == "tasks":
        holdout["shots"] = _RANK_SHOTS
    selection = select_rank(tasks, ranks=ranks, cv=args.cv, **holdout, verbose=True, **options)
    print(selection)
    print(_explain_best(selection))
    return selection.best_rank, selection


def _save_fit(result, args, rank, selection, features, names, preprocessing, groups) -> None:
    """Write the model with what `predict` needs, and print the fit's summary."""
    if result.status == "diverged":
        raise ValueError("the fit diverged, so no model was written: keep the features "
                         "standardised (no --no-standardize) and the target on a moderate "
                         "scale, or give a smaller --rank")
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
        "fit_options": _fit_options(args),
        "training_groups": groups,
    }
    result.save(args.out)
    loss = result.history.get("loss", ())
    print(f"rank {rank}: {result.status} after {result.n_iter} iterations"
          + (f"; training loss (mean over tasks of the mean squared residual) {loss[-1]:.4g}"
             if len(loss) else ""))
    print(f"saved {args.out}")


# The column dask.dataframe.read_csv adds to name each row's file (for error messages).
_PATH_COLUMN = "__metasp_file__"
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}


def _run_dask_fit(args):
    """`fit` on a Dask cluster: FILE is a glob read by dask.dataframe, the tasks are
    co-located on the workers and fitted there by metasp.dask."""
    try:
        import metasp.dask as md
    except ImportError:
        raise ImportError('--dask-scheduler and --dask-workers need dask.distributed: pip '
                          'install "metasp[dask]"') from None
    paths = sorted(glob.glob(os.path.expanduser(args.file)))
    if not paths:
        raise ValueError(f"no file matches {args.file!r}: give a CSV or Parquet file, or a "
                         "glob of them (quoted, so that the shell leaves it to metasp)")
    with _dask_client(args) as client:
        frame, path_column = _dask_read(paths, args.file)
        features = _dask_features(frame, args, path_column)
        frame, preprocessing, names = _dask_model_frame(frame, args, features, path_column)
        tasks = md.Tasks.from_frame(frame, args.group, args.target, features=names,
                                    path_column=path_column, client=client)
        _print_tasks(tasks, features, args.intercept)
        options = _fit_options(args)
        try:
            rank, selection = _choose_rank(tasks, args, md.select_rank, options)
            result = md.fit(tasks, rank, **options)
        except NotImplementedError as error:
            raise ValueError(f"{error} (on the command line: fit without --dask-scheduler and "
                             "--dask-workers)") from None
        _save_fit(result, args, rank, selection, features, names, preprocessing, [])
    return 0


@contextlib.contextmanager
def _dask_client(args):
    """A dask.distributed client of --dask-scheduler, or of a new local cluster of
    --dask-workers processes (shut down afterwards)."""
    import distributed

    if args.dask_scheduler is None:
        with distributed.LocalCluster(n_workers=args.dask_workers, threads_per_worker=1,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(args.dask_scheduler)
    except (OSError, ValueError) as error:
        raise OSError(f"cannot reach the Dask scheduler at --dask-scheduler "
                      f"{args.dask_scheduler}: {error}") from None
    with client:  # closes this client only; the cluster keeps running
        yield client


def _dask_read(paths, pattern):
    """A dask DataFrame of the files, and the column naming each row's file (CSV only)."""
    import dask.dataframe as dd

    parquet = [path.lower().endswith((".parquet", ".pq")) for path in paths]
    if any(parquet) and not all(parquet):
        raise ValueError(f"{pattern!r} matches both Parquet and other files; give a glob of "
                         "one kind")
    try:
        if all(parquet):
            return dd.read_parquet(paths), None
        # dask reads a list of files with one compression: one read per kind, then concat.
        kinds = {}
        for path in paths:
            suffix = os.path.splitext(path.lower())[1]
            kinds.setdefault(_COMPRESSIONS.get(suffix), []).append(path)
        frames = [dd.read_csv(group, include_path_column=_PATH_COLUMN, compression=kind,
                              **({"blocksize": None} if kind else {}))
                  for kind, group in kinds.items()]
        return (frames[0] if len(frames) == 1 else dd.concat(frames)), _PATH_COLUMN
    except ImportError as error:
        raise ImportError('reading Parquet needs pyarrow (pip install "metasp[parquet]"): '
                          f"{error}") from None
    except ValueError as error:
        raise ValueError(f"cannot read {pattern} as {'Parquet' if all(parquet) else 'CSV'} "
                         f"files: {error}") from None


def _dask_features(frame, args, path_column) -> list:
    """The feature columns, from the frame's schema (the first file's, for CSV)."""
    schema = frame._meta.drop(columns=[path_column]) if path_column else frame._meta
    _require_columns(schema, args.file, [("--group", args.group), ("--target", args.target)])
    features = _features(schema, args, lambda column: is_numeric_column(schema[column]))
    for column in [args.target, *features]:
        if not is_numeric_column(schema[column]):
            raise ValueError(f"{args.file}: column {column!r} must hold numbers but is read as "
                             f"{schema[column].dtype}; fix its cells, or leave it out of "
                             "--features")
    return [str(column) for column in features]


def _dask_model_frame(frame, args, features, path_column):
    """(the frame of model features, preprocessing, model feature names): --dropna applied,
    the standardisation measured over all files in one pass, the intercept added."""
    import dask

    wanted = {}
    if args.dropna:
        kept = frame.dropna(subset=[args.group, args.target, *features])
        wanted["rows"], wanted["kept"], frame = frame.shape[0], kept.shape[0], kept
    if args.standardize:
        numbers = frame[features].astype("float64")
        wanted["mean"], wanted["std"] = numbers.mean(), numbers.std(ddof=0)
    try:
        (measured,) = dask.compute(wanted)
    except (ValueError, TypeError) as error:  # a file unlike the first, or not a table
        raise ValueError(f"cannot read {args.file}: {type(error).__name__}: {error}") from None
    if args.dropna and measured["kept"] < measured["rows"]:
        warnings.warn(f"dropped {measured['rows'] - measured['kept']} of {measured['rows']} rows "
                      f"of {args.file} with missing values (--dropna)", stacklevel=2)
    if args.dropna and measured["kept"] == 0:
        raise ValueError(f"no rows of {args.file} are left after --dropna")
    preprocessing = {"standardize": None, "intercept": bool(args.intercept)}
    if args.standardize:
        scale = np.array(measured["std"], dtype=np.float64)  # a writable copy
        scale[scale == 0] = 1.0  # a constant column stays constant instead of dividing by 0
        preprocessing["standardize"] = {"mean": np.array(measured["mean"], dtype=np.float64),
                                        "scale": scale}
    names = features + (["(intercept)"] if args.intercept else [])
    columns = (args.group, args.target, features, names, preprocessing, path_column)
    model = frame.map_partitions(_model_frame, *columns, meta=_model_frame(frame._meta, *columns))
    return model, preprocessing, names


def _model_frame(table, group, target, features, names, preprocessing, path_column):
    """One partition's model features (as `fit` and `predict` compute them), with its group,
    target and file columns."""
    pd = import_pandas("fitting on a Dask cluster")
    X = _preprocessed_features(table[features].to_numpy(dtype=np.float64), preprocessing)
    model = pd.DataFrame(X, columns=names, index=table.index)
    for column in (group, target, path_column):
        if column is not None:
            model[column] = table[column]
    return model


def _check_rank_selection(tasks, args) -> None:
    """What select_rank needs of the tasks, said in terms of the options."""
    if args.rank_holdout == "samples":
        if (tasks.task_sizes < 2).all():
            raise ValueError("every task has a single row, so no row can be held out within "
                             "a task: use --rank-holdout tasks, or give --rank")
        return
    shots = max(_RANK_SHOTS)
    eligible = int((tasks.task_sizes > shots).sum())
    if eligible < args.cv:
        raise ValueError(f"--rank-holdout tasks needs at least --cv {args.cv} tasks with more "
                         f"than {shots} rows; {eligible} of {tasks.n_tasks} have them: lower "
                         "--cv, use --rank-holdout samples, or give --rank")


_PREDICT_HELP = """\
Predict the tasks (groups) of FILE with a model written by `fit`.

Each group is a task. Its head is adapted in the learned subspace on its rows that have a target
value (the support rows; with --shots K, only the first K of them in file order), and then all of
its rows are predicted. A group without any target value that was a training task uses its
fitted head; any other group without a target value is an error (nothing to adapt on).
The output is FILE with two more columns: `prediction`, and `support` (True for the rows used to
adapt), written atomically. When rows outside the support have a target (for example with
--shots), their mean squared error is printed: a few-shot evaluation on your own data.
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
                        help="prior of the new heads (default: empirical, or ridge when "
                             "--ridge is given; see MetaSPResult.adapt)")
    parser.add_argument("--ridge", type=float, metavar="R",
                        help="ridge strength for --prior ridge (non-negative; 0 is least "
                             "squares)")
    parser.add_argument("--out", required=True, metavar="PRED.csv", help="CSV file to write")
    _guard(parser, _run_predict)


def _check_predict_arguments(args) -> str:
    """The prior to adapt with."""
    _at_least(args.shots, 1, "--shots")
    if args.ridge is not None and not (math.isfinite(args.ridge) and args.ridge >= 0):
        raise UsageError(f"--ridge must be a non-negative number; got {args.ridge}")
    prior = args.prior or ("empirical" if args.ridge is None else "ridge")
    if prior == "ridge" and args.ridge is None:
        raise UsageError("--prior ridge needs a strength: add --ridge R (a non-negative "
                         "number; 0 is least squares)")
    if prior != "ridge" and args.ridge is not None:
        raise UsageError(f"--ridge only applies with --prior ridge; got --prior {prior}")
    check_output(args.out, "--out")
    return prior


def _check_metadata(result, path) -> dict:
    """The columns and preprocessing that `fit` saved, checked before they are used."""
    meta = result.metadata
    if meta.get("written_by") != "python -m metasp fit":
        raise ValueError(f"{path} was not written by `python -m metasp fit`, so it does not "
                         "know its columns; use metasp.load and MetaSPResult.adapt in Python")
    features = meta.get("features")
    preprocessing = meta.get("preprocessing")
    problem = None
    if not (isinstance(meta.get("group"), str) and isinstance(meta.get("target"), str)):
        problem = "its group and target column names"
    elif not (isinstance(features, list) and all(isinstance(c, str) for c in features)):
        problem = "its feature column names"
    elif not (isinstance(meta.get("training_groups"), list)
              and all(isinstance(label, str) for label in meta["training_groups"])
              and len(meta["training_groups"]) == result.W.shape[0]):
        problem = "its training groups"
    elif not (isinstance(preprocessing, dict)
              and isinstance(preprocessing.get("intercept"), bool)
              and len(features) + preprocessing["intercept"] == result.n_features):
        problem = "its preprocessing (intercept and feature count)"
    else:
        scaling = preprocessing.get("standardize")
        if scaling is not None and not (
                isinstance(scaling, dict) and all(
                    isinstance(scaling.get(key), list) and len(scaling[key]) == len(features)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            and math.isfinite(v) for v in scaling[key])
                    for key in ("mean", "scale"))
                and all(v != 0 for v in scaling["scale"])):
            problem = "its standardisation"
    if problem:
        raise ValueError(f"{path} has damaged metadata ({problem}); fit the model again with "
                         "`python -m metasp fit`")
    return meta


def _run_predict(args, parser):
    from . import load

    prior = _check_predict_arguments(args)
    result = load(args.model)
    meta = _check_metadata(result, args.model)
    if prior == "empirical" and (result.head_mean is None or result.head_cov is None
                                 or result.noise_variance is None):
        raise ValueError(f"{args.model} has no head prior for --prior empirical; use --prior "
                         "ridge --ridge R or --prior none")
    group, target = args.group or meta["group"], args.target or meta["target"]
    features = meta["features"]
    table = _read_table(args.file)
    _require_columns(table, args.file, [("--group", group)]
                     + ([("--target", target)] if args.target else [])
                     + [("the model's features", column) for column in features])
    for column in ("prediction", "support"):
        if column in table.columns:
            raise ValueError(f"{args.file} already has a column {column!r}; rename it")
    missing = table[[group, *features]].isna().sum()
    if missing.any():
        counts = {str(c): int(n) for c, n in missing.items() if n}
        raise ValueError(f"{args.file} has missing group or feature values (count per column: "
                         f"{counts}); those rows cannot be predicted: drop or impute them")
    numbers = _numeric_table(table, args.file, group, target, features, unlabelled=True)
    X = _preprocessed_features(numbers[features].to_numpy(dtype=np.float64), meta["preprocessing"])
    y = (numbers[target].to_numpy() if target in numbers.columns
         else np.full(len(table), np.nan))
    trained = {label: t for t, label in enumerate(meta["training_groups"])}
    prediction = np.empty(len(table))
    support = np.zeros(len(table), dtype=bool)
    counts = {"adapted": 0, "trained": 0}
    unpredictable = []
    for label, rows in table.groupby(group, sort=False).indices.items():
        labelled = rows[~np.isnan(y[rows])]
        if args.shots is not None:
            labelled = labelled[:args.shots]
        if labelled.size:
            head = result.adapt(X[labelled], y[labelled], prior=prior, ridge=args.ridge)
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
    with atomic_write(args.out, "w", newline="", encoding="utf-8") as file:
        table.to_csv(file, index=False)
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
    parser = argparse.ArgumentParser(
        prog="python -m metasp",
        description="Fit and use Meta-SP models, run the demo and the paper's experiments. A "
                    "problem is reported as one line on stderr; the exit status is 2 for a bad "
                    "argument and 1 for input that cannot be used.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_experiment_command(commands)
    _add_fit_command(commands)
    _add_predict_command(commands)
    _guard(add_demo_command(commands), run_demo)
    args = parser.parse_args(argv)
    return args.run(args, parser)
