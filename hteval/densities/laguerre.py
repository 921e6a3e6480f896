"""The exact finite-size HTMP likelihood (SPEC sections 4 and 8) in numpy, as a function of kappa.

The M eigenvalues of a layer have the beta-Laguerre joint density of `hteval.densities.htmp_exact` (which holds the
same likelihood in JAX, for NUTS). With theta = 2 gamma scale / kappa its dependence on theta, at fixed kappa, is an
inverse-gamma kernel (SPEC section 8):

    log L(kappa, theta) = A(kappa) - S / theta - C(kappa) log theta,    C(kappa) = n_slices kappa N / 2,

where S is the sum of the observed eigenvalues and A(kappa) collects everything else: the repulsion term
beta sum_{i<j} log|x_i - x_j|, alpha sum log x, the Laguerre-Selberg normaliser, the orderings and the censored
eigenvalues' Selberg integral on [0, floor]. That is what lets `hteval.kappa_posterior` integrate the scale out
per kappa and compute the posterior exactly on a one-dimensional grid.

Everything here is numpy and scipy: no JAX, no compilation. A(kappa) costs O(M) lgamma calls per kappa, vectorised
over many kappa at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

__all__ = ["ExactStatistics", "censoring_error_bound", "kappa_terms", "log_likelihood", "log_vandermonde",
           "size_bucket", "statistics"]

#: rows of the pairwise-gap block in `log_vandermonde`: bounds its memory to about 8 x 2^22 bytes
_BLOCK_ELEMENTS = 2**22
#: kappa values per chunk of the (kappa, M) lgamma table in `kappa_terms` (bounded memory at M = 8192)
_KAPPA_CHUNK_ELEMENTS = 2**21


def log_vandermonde(x: np.ndarray) -> float:
    """V = sum_{i<j} log|x_i - x_j| of distinct values (float64, in row blocks of bounded memory).

    Raises ValueError when two values are equal: the joint density is then zero, and the exact likelihood
    undefined.
    """
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    if x.size > 1 and not np.all(np.diff(x) > 0):
        equal = int(np.sum(np.diff(x) <= 0)) + 1
        raise ValueError(f"eigenvalues must be distinct for the exact likelihood ({equal} are equal, "
                         f"e.g. {x[np.argmin(np.diff(x))]:.6g})")
    total = 0.0
    rows = max(1, _BLOCK_ELEMENTS // max(x.size, 1))
    for start in range(0, x.size - 1, rows):
        stop = min(start + rows, x.size - 1)
        block = x[start:stop, None]
        # the block's own pairs (a triangle: later values only), then every value after the block (a rectangle)
        own = x[None, start + 1:stop + 1] - block
        later = np.arange(start + 1, stop + 1)[None, :] > np.arange(start, stop)[:, None]
        total += float(np.sum(np.log(np.where(later, own, 1.0))))
        if stop + 1 < x.size:
            gaps = x[None, stop + 1:] - block
            total += float(np.sum(np.log(gaps, out=gaps)))
    return total


def size_bucket(m: int) -> int:
    """Static length of the Selberg products for a spectrum of M eigenvalues: the next power of two >= M (at least
    16), so that layers and simulations of similar sizes, censored or not, share one compiled NUTS program."""
    return max(16, 1 << (int(m) - 1).bit_length())


@dataclass(frozen=True)
class ExactStatistics:
    """What the exact likelihood reads from a layer: per-slice sums over the observed eigenvalues and counts.

    A conv layer's spatial slices are separate matrices (one joint density each, SPEC section 4); a dense layer
    has one slice. `floor` is the layer's censoring floor (the largest slice floor, an upper bound on each).
    """

    log_vandermonde: np.ndarray  # (slices,) sum_{i<j} log(x_j - x_i)
    log_sum: np.ndarray  # (slices,) sum log x
    total: np.ndarray  # (slices,) sum x
    n_observed: np.ndarray  # (slices,) float
    n_censored: np.ndarray  # (slices,) float
    m: int  # eigenvalues per slice, observed and censored
    gamma: float
    floor: float

    @property
    def n_slices(self) -> int:
        return int(self.log_sum.size)

    @property
    def big_n(self) -> float:
        """N = M / gamma, the larger dimension of each slice."""
        return self.m / self.gamma


def statistics(rec) -> ExactStatistics:
    """The statistics of a layer record (`hteval.spectra.LayerSpectrum`): O(M^2) per slice for the pairwise sum,
    computed once, outside any fit."""
    x = np.asarray(rec.eigenvalues, dtype=np.float64)
    ids = np.asarray(rec.slice_ids)
    parts = [x] if rec.n_slices == 1 else [x[ids == s] for s in range(rec.n_slices)]
    return ExactStatistics(log_vandermonde=np.array([log_vandermonde(p) for p in parts]),
                           log_sum=np.array([np.sum(np.log(p)) for p in parts]),
                           total=np.array([np.sum(p) for p in parts]),
                           n_observed=np.array([p.size for p in parts], dtype=np.float64),
                           n_censored=np.array([rec.M - p.size for p in parts], dtype=np.float64),
                           m=int(rec.M), gamma=float(rec.gamma), floor=float(rec.floor))


def _shape_parameters(kappa: np.ndarray, gamma: float, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """beta = kappa / M, alpha = kappa / (2 gamma) - 1 - kappa (M - 1) / (2 M), c = beta / 2 (SPEC section 4)."""
    beta = kappa / m
    alpha = kappa / (2.0 * gamma) - 1.0 - kappa * (m - 1) / (2.0 * m)
    return beta, alpha, beta / 2.0


def _selberg_sums(alpha: np.ndarray, c: np.ndarray, m: int) -> np.ndarray:
    """sum_{j<M} lgamma(alpha + 1 + j c) + lgamma(1 + (j + 1) c) - M lgamma(1 + c): log Z_M per kappa."""
    out = np.empty(alpha.shape)
    j = np.arange(m, dtype=np.float64)
    step = max(1, _KAPPA_CHUNK_ELEMENTS // m)
    for start in range(0, alpha.size, step):
        a, cc = alpha[start:start + step, None], c[start:start + step, None]
        out[start:start + step] = (np.sum(gammaln(a + 1.0 + j * cc), axis=1) + np.sum(gammaln(1.0 + (j + 1.0) * cc),
                                                                                      axis=1))
    return out - m * gammaln(1.0 + c)


def _censored_terms(alpha: np.ndarray, beta: np.ndarray, c: np.ndarray, k: float, floor: float) -> np.ndarray:
    """log of the k censored eigenvalues' integral over [0, floor]^k with the observed ones factored out: a
    Selberg integral with exponents (alpha, 0), times floor^(k (alpha + 1) + beta k (k - 1) / 2)."""
    j = np.arange(int(k), dtype=np.float64)
    a, cc = alpha[:, None], c[:, None]
    jacobi = (gammaln(a + 1.0 + j * cc) + gammaln(1.0 + j * cc) + gammaln(1.0 + (j + 1.0) * cc)
              - gammaln(a + 2.0 + (k + j - 1.0) * cc))
    log_selberg = np.sum(jacobi, axis=1) - k * gammaln(1.0 + c)
    return (k * (alpha + 1.0) + 0.5 * beta * k * (k - 1.0)) * np.log(floor) + log_selberg


def kappa_terms(stats: ExactStatistics, kappa: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(A(kappa), C(kappa), S) of log L = A - S / theta - C log theta, for an array of kappa.

    The censored eigenvalues' term is the closed form of `hteval.densities.htmp_exact` (exact while the floor is
    far below the observed eigenvalues and below theta; `censoring_error_bound` says how far it can be off).
    """
    kappa = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
    m = stats.m
    if np.any(stats.n_censored > 0) and not stats.floor > 0:
        raise ValueError(f"{int(np.sum(stats.n_censored))} eigenvalues are censored below a floor of "
                         f"{stats.floor:g}: the censored term needs a positive floor")
    beta, alpha, c = _shape_parameters(kappa, stats.gamma, m)
    log_z = _selberg_sums(alpha, c, m)
    a = np.zeros(kappa.shape)
    for v, log_x, k in zip(stats.log_vandermonde, stats.log_sum, stats.n_censored, strict=True):
        a += beta * v + (alpha + k * beta) * log_x - gammaln(k + 1.0)
        if k > 0:
            a += _censored_terms(alpha, beta, c, float(k), stats.floor)
    a += stats.n_slices * (gammaln(m + 1.0) - log_z)
    return a, stats.n_slices * kappa * stats.big_n / 2.0, float(np.sum(stats.total))


def log_likelihood(stats: ExactStatistics, kappa, scale) -> np.ndarray:
    """log L(kappa, scale) (broadcast over kappa and scale): the exact log-likelihood of the layer's spectrum,
    equal to `hteval.densities.htmp_exact.htmp_exact_loglik` summed over the slices."""
    kappa, scale = np.broadcast_arrays(np.asarray(kappa, dtype=np.float64), np.asarray(scale, dtype=np.float64))
    a, c, s = kappa_terms(stats, kappa.ravel())
    theta = 2.0 * stats.gamma * scale.ravel() / kappa.ravel()
    return (a - s / theta - c * np.log(theta)).reshape(kappa.shape)


def censoring_error_bound(stats: ExactStatistics, x_observed: np.ndarray, kappa: float, scale: float) -> float:
    """An upper bound on |error| of the closed-form censored term at (kappa, scale), in log-likelihood units.

    The closed form replaces, for each censored eigenvalue x_c in [0, f], exp(-x_c / theta) and every
    |x_o - x_c|^beta by their values at x_c = 0. Both factors decrease in x_c, so the exact integral lies between
    the closed form times phi(f)^k and the closed form itself, phi(x) = exp(-x / theta) prod_o (1 - x / x_o)^beta:
    the error is at most k |log phi(f)|.
    """
    k = float(np.sum(stats.n_censored))
    if k == 0:
        return 0.0
    theta = 2.0 * stats.gamma * scale / kappa
    beta = kappa / stats.m
    x = np.asarray(x_observed, dtype=np.float64)
    ratio = np.clip(stats.floor / x, 0.0, 1.0 - 1e-16)
    return k * (stats.floor / theta - beta * float(np.sum(np.log1p(-ratio))))
