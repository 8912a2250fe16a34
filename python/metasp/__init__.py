"""metasp: learn the subspace shared by many small linear regression tasks.

Meta Subspace Pursuit (arXiv:2409.02708) with a C++ core. Start with :func:`fit`.
"""

from . import baselines, datasets, evaluate, experiments, kernels, metrics, reference
from ._config import show_config
from ._diagnostics import Diagnostic
from ._result import (
    ConvergenceWarning,
    DiagnosticWarning,
    DivergenceWarning,
    MetaSPResult,
    load,
)
from ._select_rank import RankSelection, select_rank
from ._solver import fit, polish
from ._tasks import Tasks
from ._version import __version__ as __version__

__all__ = [
    "ConvergenceWarning",
    "Diagnostic",
    "DiagnosticWarning",
    "DivergenceWarning",
    "MetaSP",
    "MetaSPResult",
    "RankSelection",
    "Tasks",
    "baselines",
    "datasets",
    "evaluate",
    "experiments",
    "fit",
    "kernels",
    "load",
    "metrics",
    "polish",
    "reference",
    "select_rank",
    "show_config",
]


def __getattr__(name):
    # The estimator may import scikit-learn (about a second): load it on first use only.
    if name == "MetaSP":
        from .estimator import MetaSP

        globals()["MetaSP"] = MetaSP
        return MetaSP
    raise AttributeError(f"module 'metasp' has no attribute {name!r}")
