"""Draws shaped (chain, draw, ...) -> the ArviZ DataTree every fit's `data` is, whichever engine drew them."""

from __future__ import annotations

from typing import Any

import arviz as az
import numpy as np


def draws_datatree(posterior: dict[str, np.ndarray], sample_stats: dict[str, np.ndarray], *, observed: np.ndarray,
                   attrs: dict[str, Any], log_likelihood: np.ndarray | None = None):
    """The ArviZ DataTree of draws shaped (chain, draw, ...), with the eigenvalue dimension named as everywhere
    else ("eigenvalues"); the log_likelihood group only where one is given."""
    groups = {"posterior": posterior, "sample_stats": sample_stats, "observed_data": {"obs": np.asarray(observed)}}
    if log_likelihood is not None:
        groups["log_likelihood"] = {"obs": log_likelihood}
    return az.from_dict(groups, dims={"obs": ["eigenvalues"]}, attrs={"posterior": attrs, "sample_stats": attrs})
