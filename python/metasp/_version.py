"""The metasp version (a leaf module: the model files record it)."""

__version__ = "0.1.0"
