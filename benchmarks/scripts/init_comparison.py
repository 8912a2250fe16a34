"""Which start should ``metasp.fit`` use by default: ``init="zero"`` or ``init="spectral"``?

Runs the default fit with each start on the target shapes of ``accuracy_targets.py`` and writes
``init_comparison.csv`` (per shape: exact recoveries or median sin angle, and iterations).
Run from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/scripts/init_comparison.py --out results/accuracy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from accuracy_targets import EXACT, NOISELESS, NOISY, quiet, write_csv  # noqa: E402

import metasp  # noqa: E402
from metasp.metrics import sin_angle  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/accuracy")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    lines = []
    for shape in NOISELESS + NOISY:
        for init in ("zero", "spectral"):
            sins, iters = [], []
            for seed in range(args.seeds):
                X, y, B, _ = metasp.datasets.make_hps(random_state=1000 + seed, **shape)
                result = quiet(metasp.fit, X, y, shape["s"], heads="fixed", init=init,
                               random_state=seed)
                sins.append(sin_angle(result.B, B))
                iters.append(result.n_iter)
            line = dict(shape, init=init, seeds=args.seeds,
                        exact_recoveries=int(np.sum(np.array(sins) < EXACT)),
                        median_sin=float(np.median(sins)), median_iter=int(np.median(iters)),
                        max_iter=int(max(iters)))
            lines.append(line)
            print(line, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "init_comparison.csv", lines)


if __name__ == "__main__":
    main()
