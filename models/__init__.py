"""Probabilistic ensemble models (numpyro model functions), one per module.

Each module defines

* `model(eigenvalues, *, gamma, m, n_censored, floor, scale_ref)`, the numpyro model;
* `PARAMETERS`, the sites reported in summaries, and `LAW_SITES`, those that fix one eigenvalue's law;
* `log_density(x, p, *, gamma, m, scale_ref)`, `log_cdf(...)` and `draw(key, p, n, *, gamma, m, scale_ref)`:
  that law for one draw p (a dict of scalars), used by predictive checks and model comparison;
* optionally `posterior_draws(key, eigenvalues, *, chains, draws, **data)` for a model whose posterior is drawn
  exactly instead of by NUTS (by quadrature over at most two continuous parameters, the others integrated out in
  closed form or on a one-dimensional rule: every model here), with `SAMPLER` naming how and `RANDOM = "numpy"`
  where the key is a numpy Generator rather than a JAX key; `batch_log_density(x, p, ...)`, `batch_cdf(x, p,
  ...)` and `batch_draw(rng, p, n, ...)`, the one-eigenvalue law over a batch of draws (arrays) in numpy, which
  predictive checks and comparisons use instead of compiling the JAX law; `complete_prior(key, draws,
  eigenvalues, **data)` adds prior draws of latents the numpyro model marginalises (the power law's breakpoint);
  `probabilities(posterior)` gives
  posterior probabilities the model reports beside its parameters; `DENSE_MASS = True` where NUTS should adapt a
  dense mass matrix (correlated parameters; measured per model); `POINTWISE = False` for a joint likelihood
  (no pointwise log-likelihood, so no LOO), `statistics(layer)` for data summaries computed once per
  spectrum, and `static_bound(layer)` for static model arguments (bound into the compiled sampler).

`MODELS` maps the names used by the API, the CLI flags and the JSON keys to the modules. A module is imported the
first time it is looked up, so that a command using one model does not load the others (or JAX, where the model
does not need it).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType

_MODULES = {"mp": "mp", "htmp": "htmp", "htmp-exact": "htmp_exact", "htmp-outliers": "htmp_outliers",
            "inverse-htmp": "inverse_htmp", "powerlaw": "powerlaw", "correlated-mp": "correlated_mp",
            "lognormal": "lognormal"}


class _Models(Mapping):
    """Model name -> module, each imported on first use."""

    def __getitem__(self, name: str) -> ModuleType:
        return importlib.import_module(f"{__name__}.{_MODULES[name]}")

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)

    def __contains__(self, name: object) -> bool:
        return name in _MODULES


MODELS = _Models()

__all__ = ["MODELS"]
