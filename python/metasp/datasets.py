"""Data for trying metasp: simulated multi-task regression and the built-in Beijing PM2.5 data."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ._arrays import is_integer, is_real
from ._tasks import Tasks

__all__ = ["PM25Dataset", "load_beijing_pm25", "make_hps"]


def make_hps(T, m, d, s, sigma=0.0, random_state=None):
    r"""Simulate tasks from the hard-parameter-sharing model.

    :math:`y_t = X_t B^\top w_t + \sigma \varepsilon_t` with standard normal features
    :math:`X_t`, heads :math:`w_t \sim N(0, I_s)`, noise :math:`\varepsilon_t \sim N(0, I_m)`,
    and :math:`B` a uniformly random (s, d) matrix with orthonormal rows.

    Parameters
    ----------
    T, m, d, s : int
        Tasks, samples per task, features, rank (``1 <= s <= d``).
    sigma : float, default 0.0
        Noise standard deviation.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    X : ndarray of shape (T, m, d)
    y : ndarray of shape (T, m)
    B : ndarray of shape (s, d), orthonormal rows
    W : ndarray of shape (T, s)

    Examples
    --------
    >>> from metasp.datasets import make_hps
    >>> X, y, B, W = make_hps(T=100, m=10, d=20, s=2, sigma=0.1, random_state=0)
    >>> X.shape, y.shape, B.shape, W.shape
    ((100, 10, 20), (100, 10), (2, 20), (100, 2))
    """
    for name, value in (("T", T), ("m", m), ("d", d), ("s", s)):
        if not is_integer(value):
            raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}")
    if s > d:
        raise ValueError(f"the rank s = {s} cannot exceed the number of features d = {d}")
    if not is_real(sigma) or not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative finite number; got {sigma!r}")
    rng = np.random.default_rng(random_state)
    B = np.linalg.qr(rng.standard_normal((d, s)))[0].T
    W = rng.standard_normal((T, s))
    X = rng.standard_normal((T, m, d))
    y = np.einsum("tmd,td->tm", X, W @ B) + sigma * rng.standard_normal((T, m))
    return X, y, np.ascontiguousarray(B), W


PM25_FILE = "beijing_pm25.csv.gz"
PM25_SHA256 = "87633463aa48589a6a7cf9d998ffe43dd1ca49faff3b3363e6913ce9e89150d8"
PM25_CITATION = (
    "Liang, X., Zou, T., Guo, B., Li, S., Zhang, H., Zhang, S., Huang, H. and Chen, S. X. (2015). "
    "Assessing Beijing's PM2.5 pollution: severity, weather impact, APEC and winter heating. "
    "Proc. R. Soc. A 471, 20150257."
)
# Wind direction dummies: "cv" (calm or variable) is the reference level, so the dummies are
# not collinear with the intercept.
_WIND_LEVELS = ("NE", "NW", "SE")
PM25_FEATURES = ("intercept", "dew_point", "temperature", "pressure", "log1p_wind_speed",
                 "snow_hours", "rain_hours", "wind_NE", "wind_NW", "wind_SE")
_HOURS = 24

_PM25_DESCRIPTION = f"""\
Beijing PM2.5 day tasks.

Hourly PM2.5 and weather at the US Embassy in Beijing, 2010-2014 (UCI Machine Learning
Repository "Beijing PM2.5 Data", id 381, by Song Xi Chen; CC BY 4.0). One regression task per
day: the 1,571 days with all 24 hourly PM2.5 values, 24 samples each.

Target: log(1 + PM2.5), PM2.5 in ug/m^3.
Features (d = 10), in this order:
  intercept         constant 1 (not scaled)
  dew_point         DEWP, C                          standardised
  temperature       TEMP, C                          standardised
  pressure          PRES, hPa                        standardised
  log1p_wind_speed  log(1 + Iws), Iws the cumulated wind speed in m/s, standardised
  snow_hours        Is, cumulated hours of snow      standardised
  rain_hours        Ir, cumulated hours of rain      standardised
  wind_NE, wind_NW, wind_SE
                    0/1 dummies of the combined wind direction cbwd; the fourth level, "cv"
                    (calm or variable), is the reference, so no dummy is collinear with the
                    intercept                        standardised
"Standardised" means centred and divided by the standard deviation over all hours of the 1,571
complete days (the same constants for every task).

Cite: {PM25_CITATION}
"""


@dataclass(eq=False)
class PM25Dataset:
    """The Beijing PM2.5 day tasks returned by :func:`load_beijing_pm25`.

    Attributes
    ----------
    tasks : Tasks
        1,571 tasks (days) of 24 hourly samples, d = 10 features, target log(1 + PM2.5).
    feature_names : tuple of str
        Names of the columns of ``tasks.X``.
    days : ndarray of datetime64[D], shape (1571,)
        The day of each task (also ``tasks.labels``).
    description : str
        Encoding, scaling, source, licence and citation.
    feature_mean, feature_scale : ndarray of shape (10,)
        The standardisation: ``tasks.X = (raw - feature_mean) / feature_scale`` column by column
        (0 and 1 for the intercept).
    frame : pandas.DataFrame or None
        The raw hourly table (all 43,824 rows, missing PM2.5 as NaN) with
        ``return_frame=True``.
    """

    tasks: Tasks
    feature_names: tuple
    days: np.ndarray
    description: str
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    frame: object = None

    def __repr__(self) -> str:
        return (f"PM25Dataset(n_tasks={self.tasks.n_tasks}, samples per task {_HOURS}, "
                f"n_features={self.tasks.n_features})")


def _pm25_bytes() -> bytes:
    data = resources.files("metasp").joinpath("data", PM25_FILE).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PM25_SHA256:
        raise OSError(
            f"the built-in {PM25_FILE} is damaged (sha256 {digest}, expected {PM25_SHA256}); "
            "reinstall metasp"
        )
    return data


def load_beijing_pm25(return_frame=False):
    """Load the built-in Beijing PM2.5 data as one regression task per day.

    Hourly PM2.5 concentration and weather at the US Embassy in Beijing from 2010 to 2014
    (UCI Machine Learning Repository "Beijing PM2.5 Data", by Song Xi Chen, CC BY 4.0) [1]_.
    Each of the 1,571 days with all 24 hourly PM2.5 values is a task with 24 samples; the
    target is log(1 + PM2.5). The features are an intercept and nine standardised weather
    variables (see ``description``): dew point, temperature, pressure, log(1 + cumulated wind
    speed), cumulated hours of snow and of rain, and three wind-direction dummies with calm or
    variable wind as the reference level. The data ship with metasp; nothing is downloaded.

    Parameters
    ----------
    return_frame : bool, default False
        Also return the raw hourly table as a pandas DataFrame in ``frame`` (needs pandas:
        ``pip install "metasp[pandas]"``).

    Returns
    -------
    PM25Dataset
        ``tasks`` (:class:`metasp.Tasks`), ``feature_names``, ``days`` (datetime64[D] per
        task), ``description``, ``feature_mean`` and ``feature_scale`` (the standardisation),
        and ``frame`` (the raw table, or None).

    References
    ----------
    .. [1] Liang, X., Zou, T., Guo, B., Li, S., Zhang, H., Zhang, S., Huang, H. and Chen, S. X.
       (2015). Assessing Beijing's PM2.5 pollution: severity, weather impact, APEC and winter
       heating. Proc. R. Soc. A 471, 20150257.

    Examples
    --------
    >>> from metasp.datasets import load_beijing_pm25
    >>> data = load_beijing_pm25()
    >>> data.tasks.n_tasks, int(data.tasks.task_sizes.max()), data.tasks.n_features
    (1571, 24, 10)
    >>> str(data.days[0])
    '2010-01-02'
    """
    if not isinstance(return_frame, (bool, np.bool_)):
        raise TypeError(f"return_frame must be True or False; got {return_frame!r}")
    if return_frame:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                'return_frame=True needs pandas: pip install "metasp[pandas]"') from None
    data = _pm25_bytes()
    lines = gzip.decompress(data).decode("ascii").splitlines()
    header, *rows = csv.reader(lines)
    table = np.array(rows, dtype=object)
    column = {name: j for j, name in enumerate(header)}
    if table.shape[0] % _HOURS:
        raise OSError(f"{PM25_FILE}: expected whole days of {_HOURS} hours")
    days_table = table.reshape(-1, _HOURS, len(header))
    pm25_text = days_table[:, :, column["pm2.5"]]
    complete = (pm25_text != "").all(axis=1)
    kept = days_table[complete]

    def numbers(name):
        return kept[:, :, column[name]].astype(np.float64)

    raw = [numbers("DEWP"), numbers("TEMP"), numbers("PRES"), np.log1p(numbers("Iws")),
           numbers("Is"), numbers("Ir")]
    raw += [(kept[:, :, column["cbwd"]] == level).astype(np.float64) for level in _WIND_LEVELS]
    raw = np.stack(raw, axis=-1)  # (days, 24, 9)
    mean = raw.mean(axis=(0, 1))
    scale = raw.std(axis=(0, 1))
    n_days = kept.shape[0]
    X = np.empty((n_days, _HOURS, len(PM25_FEATURES)))
    X[:, :, 0] = 1.0
    X[:, :, 1:] = (raw - mean) / scale
    y = np.log1p(numbers("pm2.5"))
    days = np.array([f"{int(row[column['year']]):04d}-{int(row[column['month']]):02d}-"
                     f"{int(row[column['day']]):02d}" for row in kept[:, 0]], dtype="datetime64[D]")
    offsets = np.arange(n_days + 1, dtype=np.int64) * _HOURS
    tasks = Tasks(X.reshape(-1, X.shape[-1]), y.reshape(-1), offsets, labels=days,
                  feature_names=PM25_FEATURES)
    frame = None
    if return_frame:
        frame = pd.read_csv(io.BytesIO(data), compression="gzip")
    return PM25Dataset(
        tasks=tasks, feature_names=PM25_FEATURES, days=days, description=_PM25_DESCRIPTION,
        feature_mean=np.concatenate([[0.0], mean]), feature_scale=np.concatenate([[1.0], scale]),
        frame=frame,
    )
