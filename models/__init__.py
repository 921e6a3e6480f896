"""Probabilistic ensemble models (numpyro model functions), one per module.

Each module defines

* `model(eigenvalues, *, gamma, m, n_censored, floor, scale_ref)`, the numpyro model;
* `PARAMETERS`, the sites reported in summaries, and `LAW_SITES`, those that fix one eigenvalue's law;
* `log_density(x, p, *, gamma, m, scale_ref)`, `log_cdf(...)` and `draw(key, p, n, *, gamma, m, scale_ref)`:
  that law for one draw p (a dict of scalars), used by predictive checks and model comparison;
* optionally `posterior_draws(key, eigenvalues, *, chains, draws, **data)` for a model whose posterior is drawn
  exactly instead of by NUTS (the power law, whose latents but two integrate out in closed form), with `SAMPLER`
  naming how; `complete_prior(key, draws, eigenvalues, **data)` adds prior draws of latents the numpyro model
  marginalises (the power law's breakpoint); `probabilities(posterior)` gives
  posterior probabilities the model reports beside its parameters; `DENSE_MASS = True` where NUTS should adapt a
  dense mass matrix (correlated parameters; measured per model); `POINTWISE = False` for a joint likelihood
  (no pointwise log-likelihood, so no LOO), `statistics(layer)` for data summaries computed once per
  spectrum, and `static_bound(layer)` for static model arguments (bound into the compiled sampler).

`MODELS` maps the names used by the API, the CLI flags and the JSON keys.
"""

from hteval.models import correlated_mp, htmp, htmp_exact, htmp_outliers, inverse_htmp, lognormal, mp, powerlaw

MODELS = {"mp": mp, "htmp": htmp, "htmp-exact": htmp_exact, "htmp-outliers": htmp_outliers,
          "inverse-htmp": inverse_htmp, "powerlaw": powerlaw, "correlated-mp": correlated_mp, "lognormal": lognormal}

__all__ = ["MODELS"]
