"""Accuracy targets of issue 6 and the phase-transition figure.

Measures, on data from :func:`metasp.datasets.make_hps`:

* noiseless exact recovery (sin angle < 1e-8) with the defaults near the information limit
  m_IT = s(T + d - s)/T;
* noisy accuracy: median sin angle of the default fit against the oracle-initialised least
  squares (:func:`metasp.polish` started from the true subspace), and how often the fit ends in
  a minimum with a higher training loss than the oracle's, for the default and for the NumPy
  prototype of the issue (300 NIHT iterations, then the least-squares polish);
* iterations of the default against plain NIHT (``accel=None, polish=None``);
* success rate against m / m_IT for the paper's fixed step (best of gamma in
  {1, 0.5, 0.25, 0.1}), NIHT, the default and the method of moments.

Writes ``runs.csv`` (one row per fit), ``targets.csv`` (the summary), ``phase_transition.csv``
and ``phase_transition.png`` to ``--out``. Run from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/scripts/accuracy_targets.py --out results/accuracy
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path

import _measure
import numpy as np

import metasp
from metasp.baselines import mom
from metasp.metrics import sin_angle

NOISELESS = [dict(T=200, m=5, d=50, s=3), dict(T=1000, m=8, d=100, s=5)]
NOISY = [dict(T=50, m=10, d=50, s=3, sigma=0.1), dict(T=50, m=10, d=50, s=3, sigma=0.5),
         dict(T=500, m=10, d=100, s=5, sigma=0.5)]
EXACT = 1e-8          # noiseless success: sin angle below this
NIHT_MAX_ITER = 2000  # plain NIHT's budget for the iteration comparison
PHASE_SHAPE = dict(T=200, d=50, s=3)
PHASE_M = [3, 4, 5, 6, 7, 8, 10, 12, 15, 20]
PHASE_SUCCESS = 1e-4  # phase transition: sin angle below this within PHASE_MAX_ITER
PHASE_MAX_ITER = 1000
GAMMAS = [1.0, 0.5, 0.25, 0.1]


def m_it(T, d, s):
    return s * (T + d - s) / T


def quiet(function, *args, **kwargs):
    """Run a fit with its warnings silenced: the benchmark records status and accuracy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def final_loss(result):
    return float(result.history["loss"][-1]) if len(result.history["loss"]) else np.nan


def record(rows, shape, seed, method, result, B, seconds, **extra):
    rows.append(dict(
        T=shape["T"], m=shape["m"], d=shape["d"], s=shape["s"], sigma=shape.get("sigma", 0.0),
        seed=seed, method=method, sin_angle=sin_angle(result.B, B), loss=final_loss(result),
        n_iter=result.n_iter, status=result.status, seconds=round(seconds, 4), **extra,
    ))


def timed(function, *args, **kwargs):
    """(result, wall seconds) of one quiet call."""
    result, wall, _ = _measure.timed(lambda: quiet(function, *args, **kwargs))
    return result, wall


def prototype(X, y, s, B):
    """The issue's NumPy prototype, with metasp's kernels: 300 NIHT steps, then the polish."""
    first = quiet(metasp.fit, X, y, s, accel=None, polish=None, max_iter=300, tol=0, random_state=0)
    polished = quiet(metasp.polish, X, y, first.B, max_iter=1000)
    polished.n_iter += first.n_iter
    return polished


def run_targets(seeds, niht_seeds, rows):
    for shape in NOISELESS + NOISY:
        noisy = "sigma" in shape
        for seed in range(seeds):
            X, y, B, _ = metasp.datasets.make_hps(random_state=1000 + seed, **shape)
            s = shape["s"]
            result, seconds = timed(metasp.fit, X, y, s, heads="fixed", random_state=seed)
            record(rows, shape, seed, "default", result, B, seconds)
            if noisy:
                oracle, seconds = timed(metasp.polish, X, y, B, max_iter=1000)
                record(rows, shape, seed, "oracle_polish", oracle, B, seconds)
                proto, seconds = timed(prototype, X, y, s, B)
                record(rows, shape, seed, "prototype", proto, B, seconds)
            if seed < niht_seeds:
                niht, seconds = timed(metasp.fit, X, y, s, accel=None, polish=None,
                                      max_iter=NIHT_MAX_ITER, random_state=seed)
                record(rows, shape, seed, "niht", niht, B, seconds)
            print(f"{shape} seed {seed}: done", flush=True)


def summarise(rows):
    table = []
    for shape in NOISELESS + NOISY:
        key = (shape["T"], shape["m"], shape["d"], shape["s"], shape.get("sigma", 0.0))

        def of(method, key=key):
            return [r for r in rows if (r["T"], r["m"], r["d"], r["s"], r["sigma"]) == key
                    and r["method"] == method]

        default, niht = of("default"), of("niht")
        line = dict(T=key[0], m=key[1], d=key[2], s=key[3], sigma=key[4],
                    m_over_m_it=round(key[1] / m_it(key[0], key[2], key[3]), 2),
                    seeds=len(default))
        if key[4] == 0:
            line["exact_recoveries"] = sum(r["sin_angle"] < EXACT for r in default)
        else:
            oracle, proto = of("oracle_polish"), of("prototype")
            med, med_oracle = (np.median([r["sin_angle"] for r in group]) for group in (default, oracle))
            line.update(median_sin=round(med, 5), median_sin_oracle=round(med_oracle, 5),
                        ratio_to_oracle=round(med / med_oracle, 4))
            by_seed = {r["seed"]: r["loss"] for r in oracle}
            line["worse_minimum_default"] = sum(r["loss"] > by_seed[r["seed"]] * (1 + 1e-9)
                                                for r in default)
            line["worse_minimum_prototype"] = sum(r["loss"] > by_seed[r["seed"]] * (1 + 1e-9)
                                                  for r in proto)
        line["median_iter_default"] = int(np.median([r["n_iter"] for r in default]))
        line["max_iter_default"] = int(max(r["n_iter"] for r in default))
        line["median_iter_niht"] = int(np.median([r["n_iter"] for r in niht]))
        line["niht_capped"] = sum(r["status"] != "converged" for r in niht)
        line["niht_seeds"] = len(niht)
        line["median_seconds_default"] = round(float(np.median([r["seconds"] for r in default])), 3)
        table.append(line)
    return table


def run_phase_transition(seeds):
    T, d, s = PHASE_SHAPE["T"], PHASE_SHAPE["d"], PHASE_SHAPE["s"]
    limit = m_it(T, d, s)
    lines = []
    for m in PHASE_M:
        counts = dict(paper_best_gamma=0, niht=0, metasp_default=0, mom=0)
        per_gamma = {gamma: 0 for gamma in GAMMAS}
        for seed in range(seeds):
            X, y, B, _ = metasp.datasets.make_hps(T=T, m=m, d=d, s=s, random_state=2000 + seed)
            for gamma in GAMMAS:
                paper = quiet(metasp.fit, X, y, s, step=gamma, max_iter=PHASE_MAX_ITER,
                              random_state=seed)
                per_gamma[gamma] += sin_angle(paper.B, B) < PHASE_SUCCESS
            niht = quiet(metasp.fit, X, y, s, accel=None, polish=None, max_iter=PHASE_MAX_ITER,
                         random_state=seed)
            counts["niht"] += sin_angle(niht.B, B) < PHASE_SUCCESS
            default = quiet(metasp.fit, X, y, s, heads="fixed", max_iter=PHASE_MAX_ITER,
                            random_state=seed)
            counts["metasp_default"] += sin_angle(default.B, B) < PHASE_SUCCESS
            counts["mom"] += sin_angle(quiet(mom, X, y, s).B, B) < PHASE_SUCCESS
        best_gamma = max(GAMMAS, key=lambda gamma: per_gamma[gamma])
        counts["paper_best_gamma"] = per_gamma[best_gamma]
        line = dict(m=m, m_over_m_it=round(m / limit, 3), seeds=seeds, best_gamma=best_gamma)
        line.update({name: count / seeds for name, count in counts.items()})
        line.update({f"paper_gamma_{gamma:g}": per_gamma[gamma] / seeds for gamma in GAMMAS})
        lines.append(line)
        print(f"phase transition m={m}: {line}", flush=True)
    return lines


def plot(lines, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [line["m_over_m_it"] for line in lines]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, label, style in [("metasp_default", "metasp default (CGIHT + polish)", "o-"),
                              ("niht", "normalized IHT", "s--"),
                              ("paper_best_gamma", "paper, fixed step (best gamma)", "^-."),
                              ("mom", "method of moments", "x:")]:
        ax.plot(x, [line[key] for line in lines], style, label=label)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("samples per task / information limit  (m / m_IT)")
    ax.set_ylabel(f"success rate (sin angle < {PHASE_SUCCESS:g})")
    T, d, s = PHASE_SHAPE["T"], PHASE_SHAPE["d"], PHASE_SHAPE["s"]
    ax.set_title(f"Noiseless recovery, T={T}, d={d}, s={s}, {PHASE_MAX_ITER} iterations max")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_csv(path, rows):
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/accuracy")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per target shape")
    parser.add_argument("--niht-seeds", type=int, default=3,
                        help="seeds for the (slow) plain-NIHT iteration counts")
    parser.add_argument("--phase-seeds", type=int, default=5, help="seeds per phase-transition point")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    run_targets(args.seeds, args.niht_seeds, rows)
    write_csv(out / "runs.csv", rows)
    table = summarise(rows)
    write_csv(out / "targets.csv", table)
    for line in table:
        print(line)
    lines = run_phase_transition(args.phase_seeds)
    write_csv(out / "phase_transition.csv", lines)
    plot(lines, out / "phase_transition.png")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
