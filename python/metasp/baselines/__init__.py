r"""Competing methods for learning a shared linear subspace, under the interface of :func:`metasp.fit`.

Every function here has the signature ``name(Xs, ys=None, s=None, **options)``, accepts the same
task inputs as :func:`metasp.fit` (lists of per-task arrays, a 3-D array, or a
:class:`metasp.Tasks`), and returns a :class:`metasp.MetaSPResult`: ``B`` (s, d) with
orthonormal rows, heads ``W`` (T, s), ``Theta = W @ B``, so that
:meth:`~metasp.MetaSPResult.adapt` and :meth:`~metasp.MetaSPResult.predict` work the same for
every method. ``B`` and ``W`` are put in the same canonical form as Meta-SP's: the rows of ``B``
are the right singular vectors of ``Theta``, ``W = Theta @ B.T``.

Methods that only estimate the subspace (:func:`mom`, :func:`anil`, :func:`oracle`) fit the heads
by per-task least squares in the estimated subspace (the minimum-norm solution when a task has
fewer than ``s`` samples). The heavy passes over the data (gradients, Hessian-vector products)
and partial SVDs run in the C++ kernels of :mod:`metasp.kernels`.

The methods, with the objective each one minimises, where
:math:`L(\Theta) = \sum_t \frac{1}{2 m_t}\|y_t - X_t\theta_t\|_2^2` is Meta-SP's loss:

- :func:`mom`: method of moments, no optimisation.
- :func:`anil`: ANIL (almost no inner loop) meta-learning for linear regression.
- :func:`burer_monteiro`: :math:`L(WB) + \frac18 \|BB^\top - W^\top W\|_F^2` over ``(W, B)``.
- :func:`altmin`, :func:`altmin_gd`: :math:`L(WB)` by alternating minimisation.
- :func:`nuclear_norm`: :math:`\frac1T L(\Theta) + \frac{\lambda}{\sqrt T}\|\Theta\|_*`.
- :func:`single_task`: per-task least squares or ridge, then a rank-s truncation.
- :func:`oracle`: the true subspace, heads by least squares; the reference for the others.
"""

import inspect
from collections.abc import Callable
from types import MappingProxyType
from typing import NamedTuple

from ._altmin import altmin, altmin_gd
from ._anil import anil
from ._closed_form import mom, oracle, single_task
from ._factored import burer_monteiro
from ._trace_norm import default_lambda, noise_level, nuclear_norm


class Baseline(NamedTuple):
    """One entry of :data:`BASELINES`: a method and how metasp's tools run it.

    Attributes
    ----------
    function : callable
        ``function(Xs, ys=None, s=None, **options) -> MetaSPResult``.
    needs_truth : bool
        Needs the true subspace (``B_true``): simulations only, never real data.
    fast : bool
        Well under a second per fit on the Beijing PM2.5 day tasks, so the demo runs it by
        default (the others take 5-50 s per fit there and run with ``--baselines all``).
    real_data_options : mapping
        Options on real data (the demo), where a default does not work.
    """

    function: Callable
    needs_truth: bool = False
    fast: bool = False
    real_data_options: MappingProxyType = MappingProxyType({})

    @property
    def seeded(self) -> bool:
        """Whether the method takes a ``random_state``."""
        return "random_state" in inspect.signature(self.function).parameters


#: Every baseline by name, in the order tables list them: the one registry the command line,
#: the demo, :mod:`metasp.experiments` and :func:`metasp.evaluate.few_shot` read.
BASELINES = MappingProxyType({
    "mom": Baseline(mom, fast=True),
    # ANIL diverges on the PM2.5 day tasks with its default inner_lr=0.1 (also 0.05); 0.02 is
    # the largest of {0.1, 0.05, 0.02, 0.01} that does not (measured on the training days of a
    # split).
    "anil": Baseline(anil, fast=True, real_data_options=MappingProxyType({"inner_lr": 0.02})),
    "burer_monteiro": Baseline(burer_monteiro),
    "altmin": Baseline(altmin),
    "altmin_gd": Baseline(altmin_gd),
    "nuclear_norm": Baseline(nuclear_norm),
    "single_task": Baseline(single_task, fast=True),
    "oracle": Baseline(oracle, needs_truth=True),
})

# BASELINES and Baseline are for metasp's own tools (and scripts that run every baseline);
# they are not part of the documented API.
__all__ = [
    "altmin",
    "altmin_gd",
    "anil",
    "burer_monteiro",
    "default_lambda",
    "mom",
    "noise_level",
    "nuclear_norm",
    "oracle",
    "single_task",
]

# The functions live in private submodules: list them so that doctest runs their examples
# when it tests this package.
__test__ = {name: globals()[name] for name in __all__}
