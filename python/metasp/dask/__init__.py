"""metasp on a Dask cluster: the same fit as :func:`metasp.fit`, with the tasks' rows kept on
the workers and only small sums sent to the driver per evaluation.

Requires ``pip install "metasp[dask]"``::

    import dask.dataframe as dd, metasp.dask as md
    tasks = md.Tasks.from_frame(dd.read_parquet("data/*.parquet"), group="station", target="y")
    result = md.fit(tasks, s=5)
    selection = md.select_rank(tasks, ranks=range(1, 9))  # by held-out tasks
"""

from __future__ import annotations

try:
    import distributed  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError('metasp.dask needs dask.distributed: pip install "metasp[dask]"') from error

from ._fit import DaskResult, fit, marginal_pass
from ._select_rank import select_rank
from ._tasks import Tasks

__all__ = ["DaskResult", "Tasks", "fit", "marginal_pass", "select_rank"]
