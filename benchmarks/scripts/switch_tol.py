"""When should ``metasp.fit`` hand over from hard thresholding to the least-squares polish?

The switch happens once the relative change of the CGIHT iterates drops below ``switch_tol``
(or the loss plateaus). This measures, for a few values, exact recoveries / median sin angle,
bad minima (final loss above the oracle-initialised polish's) and iterations on the target
shapes of ``accuracy_targets.py``, through the private binding (``switch_tol`` is not a public
option). Writes ``switch_tol.csv``. Run from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/scripts/switch_tol.py --out results/accuracy
    OMP_NUM_THREADS=2 python benchmarks/scripts/switch_tol.py --out results/accuracy \
        --first-seed 100 --name switch_tol_seeds100.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from accuracy_targets import EXACT, NOISELESS, NOISY, quiet, write_csv  # noqa: E402

import metasp  # noqa: E402
from metasp import _core  # noqa: E402
from metasp._solver import SVD_MAX_STEPS, SVD_TOL  # noqa: E402
from metasp._validation import DIVERGENCE_FACTOR  # noqa: E402
from metasp.metrics import sin_angle  # noqa: E402

SWITCH_TOLS = [1e-3, 1e-2, 3e-2]


def solve(tasks, s, seed, switch_tol):
    return _core.solve(tasks.X, tasks.y, tasks.offsets, s, True, 1.0, 1000, 1e-10, 2, seed, None,
                       DIVERGENCE_FACTOR, SVD_TOL, SVD_MAX_STEPS, conjugate=True, refine=True,
                       switch_tol=switch_tol)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/accuracy")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=1000, help="data seeds start here")
    parser.add_argument("--name", default="switch_tol.csv", help="output file name")
    args = parser.parse_args(argv)
    lines = []
    for shape in NOISELESS + NOISY:
        results = {tol: [] for tol in SWITCH_TOLS}
        for seed in range(args.seeds):
            X, y, B, _ = metasp.datasets.make_hps(random_state=args.first_seed + seed, **shape)
            tasks = metasp.Tasks.from_array(X, y)
            # Worse than the oracle beyond rounding (noiseless losses end near 1e-30).
            oracle = quiet(metasp.polish, tasks, B=B, max_iter=1000).history["loss"][-1]
            oracle = oracle * (1 + 1e-9) + 1e-20 * np.mean(y**2)
            for tol in SWITCH_TOLS:
                out = solve(tasks, shape["s"], seed, tol)
                results[tol].append((sin_angle(out["B"], B), out["loss"][-1] > oracle,
                                     out["n_iter"]))
        for tol, rows in results.items():
            sins, worse, iters = (np.array(column) for column in zip(*rows))
            line = dict(shape, switch_tol=tol, seeds=args.seeds, first_seed=args.first_seed,
                        exact_recoveries=int(np.sum(sins < EXACT)), median_sin=float(np.median(sins)),
                        worse_minimum=int(worse.sum()), median_iter=int(np.median(iters)),
                        max_iter=int(iters.max()))
            lines.append(line)
            print(line, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / args.name, lines)


if __name__ == "__main__":
    main()
