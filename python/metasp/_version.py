"""The metasp version (a leaf module: model files record it).

The one place it is written: pyproject.toml reads it at build time (scikit-build-core's regex
metadata provider) and metasp.__version__ imports it.
"""

__version__ = "0.1.0"
