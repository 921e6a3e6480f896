"""Probabilistic ensemble models (numpyro model functions), one per module.

Each module defines `model(eigenvalues, *, gamma, m, n_censored, floor, scale_ref)` and `PARAMETERS`, the
sites reported in summaries. `MODELS` maps the names used by the API, the CLI flags and the JSON keys.
"""

from hteval.models import htmp, inverse_htmp, mp

MODELS = {"htmp": htmp, "inverse-htmp": inverse_htmp, "mp": mp}

__all__ = ["MODELS"]
