"""Partial pooling of kappa across the layers of a network: a model-level kappa with its interval.

The population model is log kappa_l ~ Normal(mu, tau) truncated to the prior's box [log 1e-3, log 1e3], each
layer keeping its own scale. It is fitted in two stages (Lunn et al., Stat. Med. 2013): each layer's NUTS
posterior of log kappa, drawn under the flat prior on that box with its scale integrated out, is proportional to
the layer's marginal likelihood of log kappa, so a Gaussian kernel density of those draws stands in for it. With
Gaussian kernels and a normal population every layer's log kappa integrates out in closed form,

    p(data_l | mu, tau) = (1/n) sum_i N(d_i; mu, sqrt(tau^2 + h^2)) [Phi((B - m_i)/s) - Phi((A - m_i)/s)] / Z,
    m_i = (d_i tau^2 + mu h^2) / (tau^2 + h^2),  s^2 = tau^2 h^2 / (tau^2 + h^2),
    Z = Phi((B - mu)/tau) - Phi((A - mu)/tau),

so NUTS samples only (mu, tau), and each layer's pooled log kappa is then drawn exactly from its conditional,
a mixture of the truncated normals N(m_i, s) weighted by the terms of the sum. Each layer's draws are shrunk
toward their mean by sqrt(1 - h^2/sd^2) before the kernels are placed, so the density keeps the posterior's
variance instead of adding h^2 to it.

What this assumes: layers are independent given (mu, tau), and their scales are not pooled; what it costs: two
parameters, whatever the number of layers. Priors: mu ~ Normal(0, 3) (kappa from ~1e-4 to ~1e4 within 3 sd,
the box's width), tau ~ HalfNormal(2.5) (layers a factor ~12 apart in kappa within one sd is unremarkable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr, logsumexp, ndtr

from hteval.errors import InputError
from hteval.infer import ESS_MIN, RHAT_MAX, median_and_interval
from hteval.models.priors import LOG_KAPPA_HIGH, LOG_KAPPA_LOW
from hteval.nuts import run_chains

MU_PRIOR_SD = 3.0
TAU_PRIOR_SD = 2.5
#: fewer draws than this make the kernel density of a layer's posterior too coarse to stand for its likelihood
MIN_DRAWS = 100
#: kernels per layer: a layer's draws are thinned to this many of their quantiles (a 1-D density needs no more,
#: and every NUTS step of the population model evaluates layers x kernels terms)
KERNELS = 128


@dataclass
class Pooled:
    """Posterior of the population (mu, tau of log kappa) and of every layer's pooled log kappa."""

    layers: list[str]
    mu: np.ndarray  # (draws,)
    tau: np.ndarray  # (draws,)
    log_kappa: np.ndarray  # (draws, layers)
    prob: float
    diagnostics: dict

    @property
    def kappa(self) -> np.ndarray:
        """Population median kappa exp(mu): the model-level kappa."""
        return np.exp(self.mu)

    def interval(self, draws: np.ndarray) -> tuple[float, float, float]:
        """Median and equal-tailed interval at this result's prob."""
        return median_and_interval(draws, self.prob)

    def table(self):
        """Per-layer pooled kappa (median, ci_low, ci_high) in the order given."""
        import pandas as pd

        rows = [dict(zip(("kappa_median", "kappa_ci_low", "kappa_ci_high"),
                         self.interval(np.exp(self.log_kappa[:, j])), strict=True)) for j in range(len(self.layers))]
        return pd.DataFrame(rows, index=pd.Index(self.layers, name="name"))

    def to_json(self) -> dict:
        median, lo, hi = self.interval(self.kappa)
        tau = self.interval(self.tau)
        return {"kappa": {"median": median, "ci_low": lo, "ci_high": hi},
                "tau": {"median": tau[0], "ci_low": tau[1], "ci_high": tau[2]},
                "prob": self.prob, "n_layers": len(self.layers), "layers": self.layers,
                "diagnostics": self.diagnostics,
                "method": "two-stage partial pooling of log kappa (kernel density of each layer's posterior)"}


def probability_lower(a: Pooled, b: Pooled) -> float:
    """P(model-level kappa of a < that of b), the two networks' posteriors being independent."""
    n = min(a.mu.size, b.mu.size)
    return float(np.mean(a.mu[:n, None] < b.mu[None, :n]))


def _kernel_inputs(draws: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    layers, centres, widths = [], [], []
    n = min(len(np.ravel(d)) for d in draws.values()) if draws else 0
    if len(draws) < 2:
        raise InputError("partial pooling needs the kappa posteriors of at least two layers")
    if n < MIN_DRAWS:
        raise InputError(f"partial pooling needs at least {MIN_DRAWS} posterior draws per layer; got {n}")
    for name, kappa in draws.items():
        d = np.log(np.ravel(np.asarray(kappa, dtype=np.float64)))[:n]
        if not np.all(np.isfinite(d)):
            raise InputError("kappa draws must be finite and positive", source=name)
        d = np.sort(d)[((np.arange(min(KERNELS, n)) + 0.5) * n / min(KERNELS, n)).astype(int)]
        sd = float(np.std(d))
        iqr = float(np.subtract(*np.quantile(d, [0.75, 0.25])))
        h = 0.9 * min(sd, iqr / 1.34) * d.size ** -0.2 if sd > 0 else 1e-3  # Silverman's rule
        h = max(h, 1e-3)
        shrink = math.sqrt(max(1.0 - h**2 / sd**2, 0.0)) if sd > 0 else 1.0
        layers.append(name)
        centres.append(d.mean() + shrink * (d - d.mean()))
        widths.append(h)
    return layers, np.array(centres), np.array(widths)


def _log_box(m, s):
    """log(Phi((B - m)/s) - Phi((A - m)/s)), stable on both sides of the box."""
    upper, lower = log_ndtr((LOG_KAPPA_HIGH - m) / s), log_ndtr((LOG_KAPPA_LOW - m) / s)
    return upper + jnp.log1p(-jnp.exp(jnp.minimum(lower - upper, -1e-300)))


def _terms(d, h, mu, tau):
    """Per kernel: log of its share of p(data_l | mu, tau), and the conditional's mean and sd. d: (L, n), h: (L,)."""
    h = h[:, None]
    v = tau**2 + h**2
    m = (d * tau**2 + mu * h**2) / v
    s = tau * h / jnp.sqrt(v)
    # the kernels' box masses by plain differences (log_ndtr per kernel would dominate the cost): m lies
    # between a draw, inside the box, and mu, so a mass below 1e-300 only arises far out where mu never goes
    mass = ndtr((LOG_KAPPA_HIGH - m) / s) - ndtr((LOG_KAPPA_LOW - m) / s)
    log_w = -0.5 * (d - mu) ** 2 / v - 0.5 * jnp.log(2 * jnp.pi * v) + jnp.log(jnp.maximum(mass, 1e-300))
    return log_w, m, s


def _model(d, h):
    mu = numpyro.sample("mu", dist.Normal(0.0, MU_PRIOR_SD))
    tau = numpyro.sample("tau", dist.HalfNormal(TAU_PRIOR_SD))
    log_w, _, _ = _terms(d, h, mu, tau)
    per_layer = logsumexp(log_w, axis=1) - jnp.log(d.shape[1]) - _log_box(mu, tau)
    numpyro.factor("layers", jnp.sum(per_layer))


def pool_kappa(draws: Mapping[str, np.ndarray], *, prob: float = 0.9, seed: int = 0, chains: int = 2,
               samples: int = 1000, warmup: int = 500) -> Pooled:
    """Partial pooling of kappa over layers; draws maps layer name -> its posterior draws of kappa (any shape)."""
    layers, d, h = _kernel_inputs(draws)
    d, h = jnp.asarray(d), jnp.asarray(h)
    key_mcmc, key_layers = jax.random.split(jax.random.PRNGKey(seed))
    # small steps: with few layers the posterior of log tau has a long tail toward tau = 0 (no spread between
    # layers), where the default step size diverges now and then
    z, stats, kernel = run_chains(_model, (d, h), {}, key=key_mcmc, chains=chains, warmup=warmup, draws=samples,
                                  target_accept=0.95, dense_mass=True)
    flat = {k: jnp.asarray(v.reshape(-1)) for k, v in z.items()}
    post = {k: np.asarray(v) for k, v in jax.vmap(kernel.postprocess_fn((d, h), {}))(flat).items()}
    mu, tau = post["mu"], post["tau"]
    log_kappa = np.asarray(_draw_layers(key_layers, d, h, jnp.asarray(mu), jnp.asarray(tau)))
    by_chain = {k: v.reshape(chains, samples) for k, v in post.items()}
    return Pooled(layers=layers, mu=mu, tau=tau, log_kappa=log_kappa, prob=prob,
                  diagnostics=_diagnostics(by_chain, int(stats["diverging"].sum())))


@jax.jit
def _draw_layers(key, d, h, mu, tau):
    def one(key, mu, tau):
        log_w, m, s = _terms(d, h, mu, tau)
        k_pick, k_draw = jax.random.split(key)
        pick = jax.random.categorical(k_pick, log_w, axis=1)  # (L,)
        m = jnp.take_along_axis(m, pick[:, None], axis=1)[:, 0]
        s = s[:, 0]
        lo, hi = (LOG_KAPPA_LOW - m) / s, (LOG_KAPPA_HIGH - m) / s
        return m + s * jax.random.truncated_normal(k_draw, lo, hi, shape=m.shape)

    return jax.vmap(one)(jax.random.split(key, mu.size), mu, tau)


def _diagnostics(post: dict[str, np.ndarray], divergences: int) -> dict:
    import arviz as az

    r_hat = max(float(az.rhat(np.asarray(post[k]))) for k in ("mu", "tau"))
    ess = min(float(az.ess(np.asarray(post[k]))) for k in ("mu", "tau"))
    reasons = []
    if not r_hat <= RHAT_MAX:
        reasons.append(f"R-hat {r_hat:.3f} > {RHAT_MAX}")
    if not ess >= ESS_MIN:
        reasons.append(f"ess_bulk {ess:.0f} < {ESS_MIN}")
    if divergences:
        reasons.append(f"{divergences} divergent transitions")
    return {"converged": not reasons, "reasons": reasons, "r_hat": r_hat, "ess_bulk": ess, "divergences": divergences}


__all__ = ["Pooled", "pool_kappa", "probability_lower"]
