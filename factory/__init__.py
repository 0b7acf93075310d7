"""factory: a Ray-native AI factory. See README.md and DESIGN.md."""

from factory._version import __version__

__all__ = ["__version__"]
