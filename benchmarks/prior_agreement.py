"""pytest plugin: how closely the compiled head prior agrees with the NumPy EM on every fit the
test suite makes, against how much the NumPy EM itself moves under a change of rounding.

    cd benchmarks && OMP_NUM_THREADS=2 python -m pytest ../tests -q -p prior_agreement
    METASP_BASELINE=DIR ... (as above)   # also against another build, the package
                                         # metasp_baseline in DIR (see post_fit.py)

For each call of ``_fit_head_prior`` it compares (largest of the three parameters' relative
difference in norm) the compiled EM with its NumPy twin ``metasp.reference.fit_head_prior`` on
the same statistics, and the NumPy twin with itself summing over blocks of 7 tasks instead of
its default (a pure change of rounding), and prints quantiles at the end.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np

_rows = []


def _difference(a, b):
    return max(float(np.linalg.norm(np.subtract(u, v)) / max(np.linalg.norm(v), 1e-300))
               for u, v in zip(a, b))


def pytest_configure(config):
    import metasp._result as result_module
    import metasp._solver as solver_module
    from metasp import reference

    baseline = None
    if os.environ.get("METASP_BASELINE"):
        sys.path.insert(0, os.environ["METASP_BASELINE"])
        baseline = importlib.import_module("metasp_baseline._result")
    original = result_module._fit_head_prior

    def blocks_of_7(params, statistics, n, floor):
        return reference.head_prior_em_step(params, statistics, n, floor, block=7)

    def compared(statistics, n, max_iter=100, tol=1e-5, **options):
        ours = original(statistics, n, max_iter, tol, **options)
        if options.get("em_step") is None:
            statistics = tuple(statistics[:3])
            numpy = reference.fit_head_prior(statistics, n, max_iter, tol)
            row = {
                "T": statistics[0].shape[0],
                "well_posed": ours[2] > 1e-6 * statistics[2].sum() / n,
                "compiled vs NumPy": _difference(ours, numpy),
                "NumPy blocks of 7 vs NumPy": _difference(
                    original(statistics, n, max_iter, tol, em_step=blocks_of_7), numpy),
            }
            if baseline is not None:
                row["compiled vs baseline"] = _difference(
                    ours, baseline._fit_head_prior(statistics, n, max_iter, tol))
            _rows.append(row)
        return ours

    result_module._fit_head_prior = compared
    solver_module._fit_head_prior = compared


def pytest_terminal_summary(terminalreporter):
    rows = [row for row in _rows if row["T"] > 7]  # blocks of 7 change nothing below
    if not rows:
        return
    write = terminalreporter.write_line
    write(f"head prior agreement over {len(rows)} fits with T > 7 "
          f"({sum(row['well_posed'] for row in rows)} with noise variance > 1e-6 of the "
          "mean square target)")
    write("| comparison | median | 90% | 99% | max | > 1e-10 |")
    write("|---|---|---|---|---|---|")
    for key in [key for key in rows[0] if " vs " in key]:
        values = np.array([row[key] for row in rows])
        q = np.quantile(values, [0.5, 0.9, 0.99])
        write(f"| {key} | {q[0]:.1e} | {q[1]:.1e} | {q[2]:.1e} | {values.max():.1e} | "
              f"{np.sum(values > 1e-10)} |")
