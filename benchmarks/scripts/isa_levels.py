"""Speed of each x86-64 ISA level's compiled core, and of other builds, one thread.

    python benchmarks/scripts/isa_levels.py                       # every level this CPU runs
    python benchmarks/scripts/isa_levels.py --python native=/path/to/native-venv/bin/python
    python benchmarks/scripts/isa_levels.py --quick               # small shape, smoke test

Each configuration is an interpreter with metasp installed and, for the per-level builds, a
``METASP_ISA`` value; ``--python LABEL=PATH`` adds an interpreter whose metasp picks its own
core (for instance a ``-Ccmake.define.METASP_NATIVE=ON`` build). Every measurement runs in a
fresh interpreter with ``OMP_NUM_THREADS=1``, and the configurations take turns round after
round, so a busy machine slows them all alike. Per configuration and round it times

* one iteration of the paper's solver (gradient pass, step, truncated SVD, update), as the
  difference of fits running 25 and 5 iterations divided by 20, which cancels the set-up;
* the whole default fit (``metasp.fit(Xs, ys, s)``, random heads, to convergence).

The report gives medians over the rounds of CPU time (which other processes on the machine
inflate less than wall time) and wall time, and each configuration's ratio to the first one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LEVELS = ("baseline", "v2", "v3", "v4")
SHORT_ITERATIONS, LONG_ITERATIONS = 5, 25


def worker(T: int, m: int, d: int, s: int) -> dict:
    """Time the iteration and the default fit once in this interpreter; return the timings."""
    import warnings

    import metasp

    X, y, _, _ = metasp.datasets.make_hps(T, m, d, s, sigma=0.1, random_state=0)
    tasks = metasp.Tasks.from_array(X, y)
    del X, y
    warnings.simplefilter("ignore", metasp.ConvergenceWarning)

    def clocked(run) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return time.process_time() - cpu, time.perf_counter() - wall

    def paper_iterations(n: int) -> None:
        metasp.fit(tasks, None, s, max_iter=n, tol=0, n_jobs=1, random_state=0, accel=None,
                   refine=None)

    paper_iterations(SHORT_ITERATIONS)  # warm-up: page in the data, load the core
    short = clocked(lambda: paper_iterations(SHORT_ITERATIONS))
    long = clocked(lambda: paper_iterations(LONG_ITERATIONS))
    fit = clocked(lambda: metasp.fit(tasks, None, s, n_jobs=1, random_state=0))
    span = LONG_ITERATIONS - SHORT_ITERATIONS
    core = metasp.show_config(mode="dicts")["Compiled core"]
    return {
        "module": core["module"],
        "iteration_cpu": (long[0] - short[0]) / span,
        "iteration_wall": (long[1] - short[1]) / span,
        "fit_cpu": fit[0],
        "fit_wall": fit[1],
    }


def measure(python: str, isa: str | None, shape: list[int]) -> dict:
    environment = {name: value for name, value in os.environ.items() if name != "METASP_ISA"}
    environment["OMP_NUM_THREADS"] = "1"
    if isa:
        environment["METASP_ISA"] = isa
    done = subprocess.run([python, __file__, "--worker", *map(str, shape)], env=environment,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python} (METASP_ISA={isa}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def supported_levels(python: str) -> list[str]:
    code = ("import json, metasp; c = metasp.show_config(mode='dicts')['Compiled core']; "
            "print(json.dumps([l for l in c.get('levels built', []) "
            "if l in c.get('levels this CPU runs', [])]))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(configurations: list[str], timings: dict[str, list[dict]], shape, rounds) -> str:
    columns = ("iteration_cpu", "iteration_wall", "fit_cpu", "fit_wall")
    medians = {label: {column: statistics.median(run[column] for run in timings[label])
                       for column in columns} for label in configurations}
    first = configurations[0]
    lines = [
        f"(T, m, d, s) = {tuple(shape)}, one thread, medians of {rounds} interleaved rounds; "
        f"ratios against {first}.",
        "",
        "configuration | core module | iteration CPU ms | iteration wall ms | fit CPU s | "
        "fit wall s | iteration CPU ratio | fit CPU ratio",
        "--- | --- | --- | --- | --- | --- | --- | ---",
    ]
    for label in configurations:
        row = medians[label]
        lines.append(
            f"{label} | {timings[label][0]['module']} | {1e3 * row['iteration_cpu']:.2f} | "
            f"{1e3 * row['iteration_wall']:.2f} | {row['fit_cpu']:.2f} | {row['fit_wall']:.2f} | "
            f"{row['iteration_cpu'] / medians[first]['iteration_cpu']:.3f} | "
            f"{row['fit_cpu'] / medians[first]['fit_cpu']:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, type=int, metavar=("T", "m", "d", "s"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--shape", nargs=4, type=int, default=[20000, 20, 100, 5],
                        metavar=("T", "m", "d", "s"))
    parser.add_argument("--quick", action="store_true", help="(T, m, d, s) = (500, 20, 50, 3)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--levels", nargs="+", choices=LEVELS,
                        help="levels of this interpreter's metasp (default: all it runs)")
    parser.add_argument("--python", action="append", default=[], metavar="LABEL=PATH",
                        help="another interpreter with metasp installed; its metasp picks "
                             "its core (repeatable); listed first in the report")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    shape = [500, 20, 50, 3] if args.quick else args.shape
    configurations: dict[str, tuple[str, str | None]] = {}
    for entry in args.python:
        label, separator, path = entry.partition("=")
        if not separator or not label or not path:
            raise SystemExit(f"--python takes LABEL=PATH; got {entry!r}")
        configurations[label] = (path, None)
    levels = args.levels or supported_levels(sys.executable)
    configurations["this build, its choice"] = (sys.executable, None)
    for level in levels:
        configurations[f"METASP_ISA={level}"] = (sys.executable, level)
    timings: dict[str, list[dict]] = {label: [] for label in configurations}
    for round_number in range(args.rounds):
        for label, (python, isa) in configurations.items():
            timings[label].append(measure(python, isa, shape))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    print(report(list(configurations), timings, shape, args.rounds))


if __name__ == "__main__":
    main()
