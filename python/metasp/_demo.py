"""``python -m metasp demo``: the main job on the built-in Beijing PM2.5 day tasks."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._result import ConvergenceWarning
from ._usage import UsageError, check_output
from .baselines import BASELINES

DEFAULT_METHODS = ("metasp", "metasp_no_prior", "ridge", "ridge_tuned", "pooled",
                   "pooled_intercept")
# The baselines the demo runs by default, and their options on these tasks: see BASELINES.
FAST_BASELINES = tuple(name for name, baseline in BASELINES.items() if baseline.fast)
BASELINE_OPTIONS = {name: dict(baseline.real_data_options)
                    for name, baseline in BASELINES.items() if baseline.real_data_options}


def add_demo_command(commands):
    parser = commands.add_parser(
        "demo", help="few-shot comparison on the built-in Beijing PM2.5 day tasks",
        description="Load the Beijing PM2.5 day tasks (built in), choose the rank with "
                    "select_rank on training tasks, fit Meta-SP, compare few-shot MSE with "
                    "per-task ridge and pooled models (and the baselines with --baselines), "
                    "print the table and write a plot.")
    parser.add_argument("--shots", type=int, nargs="+", default=[3, 5, 8], metavar="K",
                        help="support-set sizes (default: 3 5 8)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="random splits of the days (default: 5)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="fraction of days held out (default: 0.2)")
    parser.add_argument("--max-rank", type=int, default=10, metavar="S",
                        help="largest rank tried by select_rank (default: 10 = d)")
    parser.add_argument("--cv", type=int, default=3,
                        help="folds of training days for select_rank (default: 3)")
    parser.add_argument("--rank-rule", choices=("1se", "min"), default="1se",
                        help="select_rank's rule: smallest rank within one standard error "
                             "of the lowest score, or the lowest (default: 1se)")
    parser.add_argument("--max-iter", type=int, default=150,
                        help="solver iteration cap (default: 150)")
    parser.add_argument("--baselines", choices=("none", "fast", "all"), default="fast",
                        help=f"subspace baselines to compare: 'fast' "
                             f"({', '.join(FAST_BASELINES)}; default), 'all' (every method of "
                             "metasp.baselines: minutes), or 'none'")
    parser.add_argument("--random-state", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--plot", default="metasp_demo.png", metavar="PNG",
                        help="plot file, its format from its suffix (.png, .pdf, .svg, ...; "
                             "default: metasp_demo.png; 'none' to skip)")
    parser.add_argument("--csv", metavar="CSV", help="also write the table as CSV")
    return parser


def _check_arguments(args) -> None:
    """Every argument, output paths included, before any work."""
    for option, value, minimum in (("--shots", min(args.shots), 1),
                                   ("--repeats", args.repeats, 1),
                                   ("--max-rank", args.max_rank, 1),
                                   ("--cv", args.cv, 2),
                                   ("--max-iter", args.max_iter, 1),
                                   ("--random-state", args.random_state, 0)):
        if value < minimum:
            raise UsageError(f"{option} must be at least {minimum}; got {value}")
    repeated = sorted({k for k in args.shots if args.shots.count(k) > 1})
    if repeated:
        raise UsageError(f"--shots lists {repeated} more than once")
    if not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction must lie strictly between 0 and 1; got "
                         f"{args.test_fraction}")
    if args.csv:
        check_output(args.csv, "--csv")
    if args.plot.lower() != "none":
        check_output(args.plot, "--plot")
        formats = _plot_formats()
        suffix = Path(args.plot).suffix.lower().lstrip(".")
        if formats is not None and suffix not in formats:
            raise UsageError(f"--plot {args.plot}: the suffix says no image format matplotlib "
                             f"writes; end the name with .{' .'.join(sorted(formats))} "
                             "(or give --plot none)")


def _plot_formats():
    """The file suffixes matplotlib can write, or None without matplotlib."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return None
    return set(FigureCanvasBase.get_supported_filetypes())


def run_demo(args, parser):
    from . import evaluate
    from .datasets import load_beijing_pm25

    _check_arguments(args)
    start = time.perf_counter()
    data = load_beijing_pm25()
    tasks = data.tasks
    hours = int(tasks.task_sizes.min())
    if max(args.shots) >= hours:
        raise UsageError(f"--shots {max(args.shots)} leaves no hour of a day to score: each day "
                         f"has {hours} hours; give --shots below {hours}")
    print(f"Beijing PM2.5 day tasks: {tasks.n_tasks} days x 24 hours, d = {tasks.n_features} "
          f"features ({', '.join(data.feature_names)}), target log(1 + PM2.5)")
    print("Data: UCI 'Beijing PM2.5 Data' (Song Xi Chen), CC BY 4.0; Liang et al. (2015), "
          "Proc. R. Soc. A 471, 20150257.")
    methods = list(DEFAULT_METHODS)
    available = [name for name in evaluate.available_methods() if name not in methods]
    if args.baselines == "all":
        methods[1:1] = available
    elif args.baselines == "fast":
        methods[1:1] = [name for name in available if name in FAST_BASELINES]
    fit_options = {"max_iter": args.max_iter}
    select_options = {"ranks": range(1, min(args.max_rank, tasks.n_features) + 1),
                      "cv": args.cv, "rule": args.rank_rule}
    print(f"\nFew-shot comparison: {args.repeats} random splits, {args.test_fraction:.0%} of "
          f"the days held out; rank chosen by select_rank (ranks 1..{args.max_rank}, "
          f"{args.cv} folds of days, scored by few-shot MSE) on each split's training days; k = "
          f"{', '.join(map(str, args.shots))} support hours per held-out day, MSE on the "
          "other hours.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table = evaluate.few_shot(
            methods, tasks, shots=tuple(args.shots), n_repeats=args.repeats,
            test_fraction=args.test_fraction, random_state=args.random_state,
            select_options=select_options, fit_options=fit_options,
            baseline_options=BASELINE_OPTIONS, verbose=True)
    print(f"\nranks chosen: {table[0]['ranks']}")
    print("few-shot MSE of log(1 + PM2.5) on held-out days (mean +- sd over splits; * = "
          "lowest):")
    print(evaluate.format_table(table))
    _print_verdict(table, args.shots, tasks.n_features)
    if args.csv:
        _write_csv(table, args.csv)
        print(f"table written to {args.csv}")
    if args.plot.lower() != "none":
        _plot(table, args.plot)
    print(f"\ndone in {time.perf_counter() - start:.0f} s")
    return 0


def _print_verdict(table, shots, n_features):
    cell = {(row["method"], row["shots"]): row for row in table}
    ranks = table[0]["ranks"]
    if all(rank == n_features for rank in ranks):
        print(f"note: the chosen rank is d = {n_features} in every split, so the 'subspace' is "
              "the whole feature space and every subspace method (metasp and the baselines) "
              "fits the same model; the gain over ridge and pooled models comes from the "
              "empirical head prior.")
    for k in shots:
        ours = cell["metasp", k]
        others = [row for row in table if row["shots"] == k and row["method"] != "metasp"]
        best = min(others, key=lambda row: row["mean_mse"])
        # All methods see the same splits, so compare split by split: the spread of the
        # per-split difference, not of each method's MSE (which mostly measures the split).
        difference = np.asarray(best["mse"]) - np.asarray(ours["mse"])
        margin, spread = float(difference.mean()), float(difference.std())
        if abs(margin) <= 1e-3 * ours["mean_mse"]:
            verdict = f"tie with {best['method']}"
        elif margin > spread:
            verdict = "metasp lowest, margin above its spread"
        elif margin > 0:
            verdict = "metasp lowest, margin within its spread"
        else:
            verdict = f"metasp not lowest ({best['method']} is)"
        # Equal within the head prior's EM tolerance (1e-5 relative), e.g. at rank d, where
        # every subspace method fits the same model.
        tied = np.abs(difference) <= 1e-5 * np.asarray(ours["mse"])
        lower = int(((difference > 0) & ~tied).sum())
        ties = f", tied in {int(tied.sum())}" if tied.any() else ""
        print(f"k = {k}: metasp {ours['mean_mse']:.4f}, best other {best['method']} "
              f"{best['mean_mse']:.4f}: {verdict} (margin {margin:+.4f} +- {spread:.4f} sd "
              f"over the {len(difference)} splits; metasp lower in {lower}{ties})")


def _write_csv(table, path):
    import csv

    from ._io import atomic_write

    with atomic_write(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["method", "shots", "mean_mse", "std_mse", "n_repeats", "ranks"])
        for row in table:
            writer.writerow([row["method"], row["shots"], f"{row['mean_mse']:.6g}",
                             f"{row['std_mse']:.6g}", row["n_repeats"],
                             " ".join(map(str, row["ranks"]))])


def _plot(table, path):
    from ._io import atomic_write

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is not installed (pip install "metasp[plot]")',
              file=sys.stderr)
        return
    methods = list(dict.fromkeys(row["method"] for row in table))
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for method in methods:
        rows = sorted((row for row in table if row["method"] == method),
                      key=lambda row: row["shots"])
        shots = [row["shots"] for row in rows]
        axes.errorbar(shots, [row["mean_mse"] for row in rows],
                      yerr=[row["std_mse"] for row in rows], marker="o", capsize=3,
                      label=method, linewidth=2.5 if method == "metasp" else 1.2)
    finite = [row["mean_mse"] for row in table if np.isfinite(row["mean_mse"])]
    axes.set_ylim(0, min(max(finite), 3 * np.median(finite)) * 1.1)
    axes.set_xlabel("support samples k (hours) per held-out day")
    axes.set_ylabel("query MSE of log(1 + PM2.5)")
    axes.set_title("Few-shot prediction on Beijing PM2.5 day tasks")
    axes.legend(fontsize=8)
    figure.tight_layout()
    try:
        with atomic_write(path) as file:
            figure.savefig(file, format=Path(path).suffix.lstrip(".").lower() or None, dpi=120)
    finally:
        plt.close(figure)
    print(f"plot written to {path}")
