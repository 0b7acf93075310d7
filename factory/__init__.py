"""factory: a Ray-native AI factory. See README.md and DESIGN.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from factory._version import __version__

__all__ = ["__version__", "track"]

if TYPE_CHECKING:
    from factory.train.track import track


def __getattr__(name: str) -> Any:
    # Loaded on first use, so ``import factory`` stays cheap.
    if name == "track":
        from factory.train.track import track

        globals()["track"] = track
        return track
    raise AttributeError(f"module 'factory' has no attribute {name!r}")
