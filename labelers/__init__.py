"""Labelers turn inputs into targets: a lookup of a dataset's own labels, or a solver."""

from labelers.base import LabelError

__all__ = ["LabelError"]
