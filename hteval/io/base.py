"""What every reader yields: one named tensor at a time, so a checkpoint never has to fit in memory twice."""

from typing import NamedTuple

import numpy as np


class NamedTensor(NamedTuple):
    """A tensor as stored in a checkpoint: its name, its data (often a read-only memory map), its dtype."""

    name: str
    array: np.ndarray
    dtype: str


class SkippedTensor(NamedTuple):
    """A tensor a reader found but does not hand over, and why: no values to read (the meta device), a second name
    of a tensor already read (tied weights), a layer with no spectrum (a depthwise convolution). `hteval.spectra`
    reports it as a skipped layer with this reason."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    reason: str
