"""The exact finite-size likelihood of the HTMP ensemble (SPEC section 4): the joint beta-Laguerre density.

The M eigenvalues x of a layer (hteval's convention, W^T W / N) have, for the ensemble of SPEC section 4's sampler,
the unordered joint density

    p(x) = prod_{i<j} |x_i - x_j|^beta prod_i x_i^alpha exp(-x_i / theta) / (theta^(M (alpha + 1) + beta M (M-1)/2) Z_M)

with beta = kappa / M, alpha = kappa / (2 gamma) - 1 - kappa (M - 1) / (2 M) (> -1 for gamma <= 1),
theta = 2 gamma scale / kappa and the Laguerre-Selberg integral, c = beta / 2,

    Z_M = prod_{j=0}^{M-1} Gamma(alpha + 1 + j c) Gamma(1 + (j + 1) c) / Gamma(1 + c).

It depends on the data only through V = sum_{i<j} log|x_i - x_j|, L = sum log x_i and S = sum x_i: V is computed
once per spectrum (O(M^2), `spectrum_statistics`), after which each evaluation costs O(M) lgamma calls. Unlike the
iid likelihood it knows that eigenvalues repel, so its intervals for scale are not too wide by sqrt((kappa+2)/2).

Censoring. The k eigenvalues below the floor f are unknown; their positions are integrated out. With f far below
every observed eigenvalue and below theta (true of float64 floors), |x_c - x_o| = x_o (1 + O(f / x_o)) and
exp(-x_c / theta) = 1 + O(f / theta), so the integral over [0, f]^k factorises into prod_o x_o^(k beta) times a
Selberg integral on [0, f] with exponents (alpha, 0):

    f^(k (alpha + 1) + beta k (k-1) / 2) prod_{j=0}^{k-1} Gamma(alpha + 1 + j c) Gamma(1 + j c) Gamma(1 + (j+1) c)
                                           / (Gamma(alpha + 2 + (k + j - 1) c) Gamma(1 + c)),

exact up to those relative corrections. The log-likelihood of the observed configuration (top n = M - k values
sorted, k below f) adds log M! - log k! for the orderings, so it is a proper log-probability (density in the
observed values, probability for the censored count).

Float64 needs ``jax_enable_x64``; as a library this module does not switch it on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jax.typing import ArrayLike

from hteval.densities.laguerre import log_vandermonde, size_bucket

__all__ = ["htmp_exact_loglik", "htmp_exact_sample", "log_vandermonde", "size_bucket"]


def _parameters(gamma, kappa, scale, m):
    beta = kappa / m
    alpha = kappa / (2.0 * gamma) - 1.0 - kappa * (m - 1) / (2.0 * m)
    theta = 2.0 * gamma * scale / kappa
    return beta, alpha, theta


def htmp_exact_loglik(v: ArrayLike, log_sum: ArrayLike, total: ArrayLike, *, n: ArrayLike, n_censored: ArrayLike,
                      floor: ArrayLike, gamma: float, kappa: ArrayLike, scale: ArrayLike,
                      size: int | None = None, censoring_profile: ArrayLike | None = None) -> jax.Array:
    """Exact log-likelihood of a layer's spectrum under HTMP(gamma, kappa, scale) at its finite size.

    Parameters
    ----------
    v, log_sum, total : array_like
        Statistics of the n observed eigenvalues: sum_{i<j} log|x_i - x_j| (`log_vandermonde`), sum log x, sum x.
    n, n_censored : array_like
        Observed and censored counts (may be traced); M = n + n_censored.
    floor : array_like
        Censoring floor f (used only when n_censored > 0).
    gamma : float
        Aspect ratio M / N in (0, 1].
    kappa, scale : array_like
        Parameters (scalars, may be traced).
    size : int, optional
        Static bound >= M on the products' length (`size_bucket`); default: M, which must then be concrete.
    censoring_profile : array_like, optional
        sum_o log(1 - mu floor / x_o) at `hteval.kappa_posterior.CENSORING_MU`: with it, the censored term gets
        the mean-field correction of `hteval.kappa_posterior` (each censored eigenvalue at its mean under the
        Selberg law on [0, floor]), as the exact engine does.

    Returns
    -------
    jax.Array
        log p, a scalar; differentiable in kappa and scale.
    """
    size = size_bucket(int(n) + int(n_censored)) if size is None else size
    k = jnp.asarray(n_censored, dtype=float)
    m = jnp.asarray(n, dtype=float) + k
    beta, alpha, theta = _parameters(gamma, kappa, scale, m)
    c = 0.5 * beta
    j = jnp.arange(size, dtype=float)
    log_z = jnp.sum(jnp.where(j < m, gammaln(alpha + 1.0 + j * c) + gammaln(1.0 + (j + 1.0) * c), 0.0))
    log_z = log_z - m * gammaln(1.0 + c)
    value = (beta * v + (alpha + k * beta) * log_sum - total / theta - log_z
             - (m * (alpha + 1.0) + 0.5 * beta * m * (m - 1.0)) * jnp.log(theta)
             + gammaln(m + 1.0) - gammaln(k + 1.0))
    if isinstance(n_censored, int) and n_censored == 0:
        return value  # known uncensored when the model is built: no Selberg terms on [0, floor] in the program
    # censored eigenvalues: the Selberg integral on [0, floor] with exponents (alpha, 0), k <= M terms
    jacobi = (gammaln(alpha + 1.0 + j * c) + gammaln(1.0 + j * c) + gammaln(1.0 + (j + 1.0) * c)
              - gammaln(alpha + 2.0 + (k + j - 1.0) * c))
    log_selberg = jnp.sum(jnp.where(j < k, jacobi, 0.0)) - k * gammaln(1.0 + c)
    log_floor = jnp.log(jnp.where(k > 0, floor, 1.0))
    value = value + (k * (alpha + 1.0) + 0.5 * beta * k * (k - 1.0)) * log_floor + log_selberg
    if censoring_profile is None:
        return value
    from hteval.kappa_posterior import CENSORING_MU

    # Aomoto's mean of a censored eigenvalue over the floor; the denominator exceeds 1 whenever k >= 1
    denominator = jnp.where(k > 0, alpha + 2.0 + 2.0 * (k - 1.0) * c, 1.0)
    mu = jnp.where(k > 0, (alpha + 1.0 + (k - 1.0) * c) / denominator, 0.0)
    profile = jnp.interp(mu, jnp.asarray(CENSORING_MU), jnp.asarray(censoring_profile))
    return value - k * mu * floor / theta + beta * k * profile


def htmp_exact_sample(key: jax.Array, m: int, gamma: float, kappa: ArrayLike, scale: ArrayLike) -> jax.Array:
    """One exact spectrum of M eigenvalues (ascending), the Dumitriu-Edelman tridiagonal model in JAX
    (`hteval.sampling.sample_htmp_spectrum` is the numpy original): for posterior predictive draws under jit."""
    beta = kappa / m
    i = jnp.arange(m, dtype=float)
    k_x, k_y = jax.random.split(key)
    x2 = 2.0 * jax.random.gamma(k_x, 0.5 * beta * (m / gamma - i))
    y2 = 2.0 * jax.random.gamma(k_y, 0.5 * beta * (m - 1.0 - i[:-1]))
    d = x2.at[1:].add(y2)
    e = jnp.sqrt(x2[:-1] * y2)
    lam = jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True) if m > 1 else d
    return scale * gamma * jnp.maximum(jnp.sort(lam), 0.0) / kappa
