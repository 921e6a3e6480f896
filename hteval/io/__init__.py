"""Checkpoint -> named tensors, one reader per format; plain eigenvalue files."""

from hteval.io.base import NamedTensor
from hteval.io.bundled import bundled_checkpoint
from hteval.io.dispatch import detect_format, iter_tensors
from hteval.io.eigenvalues_reader import read_eigenvalues

__all__ = ["NamedTensor", "bundled_checkpoint", "detect_format", "iter_tensors", "read_eigenvalues"]
