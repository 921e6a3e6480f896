"""What every reader yields: one named tensor at a time, so a checkpoint never has to fit in memory twice."""

from typing import NamedTuple

import numpy as np


class NamedTensor(NamedTuple):
    """A tensor as stored in a checkpoint: its name, its data (often a read-only memory map), its dtype."""

    name: str
    array: np.ndarray
    dtype: str
