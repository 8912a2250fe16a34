"""metasp: learn the subspace shared by many small linear regression tasks.

Meta Subspace Pursuit (arXiv:2409.02708) with a C++ core. Start with :func:`fit`.
"""

from . import datasets, kernels, metrics, reference
from ._result import (ConvergenceWarning, Diagnostic, DiagnosticWarning, DivergenceWarning,
                      MetaSPResult)
from ._solver import fit, polish
from ._tasks import Tasks

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "Diagnostic",
    "DiagnosticWarning",
    "DivergenceWarning",
    "MetaSPResult",
    "Tasks",
    "datasets",
    "fit",
    "kernels",
    "metrics",
    "polish",
    "reference",
]
