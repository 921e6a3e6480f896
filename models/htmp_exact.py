"""HTMP with its exact finite-size likelihood: the joint beta-Laguerre density of all M eigenvalues of the layer.

Same parameters and priors as `htmp`, but the eigenvalues are not treated as iid: their repulsion (beta = kappa/M)
enters through sum log|x_i - x_j| (`hteval.densities.htmp_exact`). The likelihood is one joint density, not a sum
over eigenvalues, so it has no pointwise log-likelihood and takes no part in PSIS-LOO comparisons. Censored
eigenvalues are integrated out over [0, floor] (the density module says how). A conv layer's slices are separate
matrices: its likelihood is the sum of one joint density per slice (SPEC section 4), each with its own statistics
and censored count; the floor of every slice is the layer's (the largest slice floor, an upper bound on each).

For figures and predictive checks, `log_density` and `log_cdf` are HTMP's one-point law (the large-M marginal of
one eigenvalue, what an ESD histogram shows), and `draw` gives exact finite-size spectra.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from hteval.densities.htmp_exact import htmp_exact_loglik, htmp_exact_sample, log_vandermonde, size_bucket
from hteval.models.htmp import cdf, log_cdf, log_density  # the one-point law is HTMP's
from hteval.models.priors import kappa_prior, scale_prior

__all__ = ["cdf", "draw", "log_cdf", "log_density", "model", "statistics", "static_bound"]

PARAMETERS = ("kappa", "scale")
LAW_SITES = ("kappa", "scale")
DENSE_MASS = True
#: one joint density: no pointwise log-likelihood (no LOO). The model reads only the spectrum's statistics, never
#: the eigenvalue array, and the static bound on M is a power of two (`size_bucket`): layers and simulations of
#: similar sizes share one compiled program whatever their censored counts.
POINTWISE = False


def static_bound(rec) -> dict:
    """Static model arguments for a layer: the bucket of its size M."""
    return {"size": size_bucket(rec.M)}


def statistics(rec) -> dict:
    """Per-slice sufficient statistics of a layer (arrays of length n_slices), computed once outside the sampler:
    O(M^2) per slice for the pairwise sum. `slice_censored` counts each slice's eigenvalues below the floor."""
    x = np.asarray(rec.eigenvalues, dtype=np.float64)
    # a slice with every eigenvalue below the floor keeps none: it contributes only P(all M below the floor)
    parts = [x] if rec.n_slices == 1 else [x[np.asarray(rec.slice_ids) == s] for s in range(rec.n_slices)]
    return {"log_vandermonde": np.array([log_vandermonde(p) for p in parts]),
            "log_sum": np.array([np.sum(np.log(p)) for p in parts]),
            "total": np.array([np.sum(p) for p in parts]),
            "n_observed": np.array([p.size for p in parts], dtype=np.float64),
            "slice_censored": np.array([rec.M - p.size for p in parts], dtype=np.float64)}


def draw(key, p, n, *, gamma, m, scale_ref):
    """The top n of an exact spectrum of M = max(m, n) eigenvalues (ascending)."""
    spectrum = htmp_exact_sample(key, max(int(m), n), gamma, p["kappa"], p["scale"])
    return spectrum[-n:]


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0,
          log_vandermonde=0.0, log_sum=0.0, total=0.0, n_observed=0.0, slice_censored=0.0, size: int = 16):
    """eigenvalues is not read (see POINTWISE): the per-slice statistics carry all the likelihood needs.
    n_censored is the layer's total, a concrete 0 when nothing is censored (no censoring terms are built)."""
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)
    uncensored = isinstance(n_censored, int) and n_censored == 0

    def one_slice(v, log_x, total_x, n, k):
        return htmp_exact_loglik(v, log_x, total_x, n=n, n_censored=0 if uncensored else k, floor=floor,
                                 gamma=gamma, kappa=kappa, scale=scale, size=size)

    per_slice = jax.vmap(one_slice)(*(jnp.atleast_1d(jnp.asarray(a, dtype=float))
                                      for a in (log_vandermonde, log_sum, total, n_observed, slice_censored)))
    numpyro.factor("joint", jnp.sum(per_slice))
