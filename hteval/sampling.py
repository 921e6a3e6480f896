"""Exact finite-size samplers of random-matrix spectra (SPEC sections 1 and 4), for tests and calibration.

These are plain numpy/scipy, not JAX: they run once per replicate outside any likelihood, and the O(M^2)
tridiagonal eigensolver is faster than anything jit would give at these sizes.

Eigenvalues follow hteval's convention (SPEC section 1): the M eigenvalues of W^T W / N, gamma = M / N.
"""

import logging
import numbers

import numpy as np
import scipy.linalg

logger = logging.getLogger(__name__)

__all__ = ["sample_correlated_spectrum", "sample_htmp_spectra", "sample_htmp_spectrum", "sample_mp_spectrum",
           "sample_pareto_tail_spectrum"]

# LAPACK's tridiagonal eigensolver is backward stable: each eigenvalue is exact for a matrix within a few
# eps * ||T|| of T, so eigenvalues of the positive semidefinite T = B B^T can come out negative by that much.
_ROUNDING_FACTOR = 8.0


def _as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _check_count(name: str, value: int) -> int:
    # bool is an Integral, but a spectrum of size True is a caller's bug
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_gamma(gamma: float) -> float:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma = M/N must lie in (0, 1] (hteval uses the smaller Gram), got {gamma!r}")
    return float(gamma)


def _check_positive(name: str, value: float) -> float:
    if not (np.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _chi2(rng: np.random.Generator, df: np.ndarray) -> np.ndarray:
    """chi^2(df) draws; the gamma form keeps tiny df exact, where draws may underflow to exactly 0."""
    return rng.gamma(df / 2.0, 2.0)


def bidiagonal_squares(rng: np.random.Generator, m: int, gamma: float, kappa):
    """Squares x_i^2, y_i^2 of the Dumitriu-Edelman bidiagonal B with Dyson index beta = kappa / m; kappa an
    array of shape (R, 1) gives R independent matrices, rows of (R, m) and (R, m - 1)."""
    beta = kappa / m
    i = np.arange(m, dtype=np.float64)
    x2 = _chi2(rng, beta * (m / gamma - i))  # df = kappa/gamma - kappa i/m > 0 since m/gamma >= m > i
    y2 = _chi2(rng, beta * (m - 1.0 - i[:-1]))  # df = kappa (m-1-i)/m > 0 for i <= m-2
    return x2, y2


def _tridiagonal_eigenvalues(x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """Eigenvalues of T = B B^T (d_i = x_i^2 + y_{i-1}^2, e_i = x_i y_i), sorted, rounding negatives zeroed.

    Eigenvalues are accurate to about eps * max(lambda) in absolute terms only: the smallest ones of a
    spectrum spanning more than ~15 decades (small kappa) are rounding-dominated, as with any eigvalsh.
    """
    d = x2.copy()
    d[1:] += y2
    e = np.sqrt(x2[:-1] * y2)
    lam = scipy.linalg.eigvalsh_tridiagonal(d, e) if d.size > 1 else d.copy()
    return _zero_rounding_negatives(np.sort(lam))


def _zero_rounding_negatives(lam: np.ndarray) -> np.ndarray:
    """Set to 0.0 the negatives within rounding of 0 (|lambda| <= 8 m eps max lambda); others are a bug."""
    tol = _ROUNDING_FACTOR * lam.size * np.finfo(np.float64).eps * max(float(lam[-1]), 0.0)
    if lam[0] < -tol:
        raise RuntimeError(f"tridiagonal eigensolver returned {lam[0]:.3e} < -{tol:.3e} for a PSD matrix")
    n_neg = int(np.count_nonzero(lam < 0.0))
    if n_neg:
        logger.debug("zeroed %d rounding-level negative eigenvalues (tolerance %.3e)", n_neg, tol)
    return np.where(lam < 0.0, 0.0, lam)


def sample_htmp_spectrum(
    seed: int | np.random.Generator, m: int, gamma: float, kappa: float, scale: float = 1.0
) -> np.ndarray:
    """Draw the M eigenvalues of one finite-size HTMP matrix (beta-Laguerre ensemble, beta = kappa / M).

    Parameters
    ----------
    seed : int or numpy.random.Generator
        An int seeds ``np.random.default_rng``; a Generator is used (and advanced) as given.
    m : int
        Number of eigenvalues M (the smaller matrix dimension), >= 1.
    gamma : float
        Aspect ratio M / N in (0, 1].
    kappa : float
        Repulsion kappa = beta_Dyson * M > 0.
    scale : float, optional
        Mean eigenvalue, > 0.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``m``, sorted ascending, all >= 0. Its sum times kappa / (gamma * scale) is
        exactly chi^2(m kappa / gamma) distributed (SPEC section 4).

    Notes
    -----
    Dumitriu-Edelman bidiagonal model (SPEC section 4). Chi-square draws with tiny degrees of freedom may
    underflow to exactly 0; they are kept, so eigenvalues may be exactly 0 (or tiny) at small kappa. The
    eigensolver is accurate to about eps * max eigenvalue in absolute terms; negative values within
    8 * m * eps * max eigenvalue of zero are rounding and returned as 0.0; a larger negative raises
    RuntimeError (it cannot happen for the positive semidefinite T = B B^T short of a solver bug).

    Raises
    ------
    ValueError
        If an argument is outside its domain.
    """
    m = _check_count("m (the number of eigenvalues)", m)
    gamma = _check_gamma(gamma)
    kappa = _check_positive("kappa", kappa)
    scale = _check_positive("scale", scale)
    rng = _as_generator(seed)
    x2, y2 = bidiagonal_squares(rng, m, gamma, kappa)
    return scale * gamma * _tridiagonal_eigenvalues(x2, y2) / kappa


def sample_htmp_spectra(
    seed: int | np.random.SeedSequence, m: int, gamma: float, kappa: float, scale: float = 1.0, *, n: int
) -> np.ndarray:
    """Draw ``n`` independent HTMP spectra, shape (n, m), each row as `sample_htmp_spectrum`.

    Each row gets its own generator spawned from ``np.random.SeedSequence(seed)``: row i does not depend on n.
    """
    n = _check_count("n (the number of spectra)", n)
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rows = [sample_htmp_spectrum(np.random.default_rng(s), m, gamma, kappa, scale) for s in seq.spawn(n)]
    return np.stack(rows)


def sample_mp_spectrum(
    seed: int | np.random.Generator, m: int, gamma: float, sigma2: float = 1.0
) -> np.ndarray:
    """Draw the M eigenvalues of a white Wishart matrix W^T W / N, W = sigma Z, Z of shape N x M Gaussian.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        An int seeds ``np.random.default_rng``; a Generator is used as given.
    m : int
        Number of eigenvalues M, >= 1.
    gamma : float
        Aspect ratio in (0, 1]; N = round(M / gamma), so the realised ratio M / N may differ slightly.
    sigma2 : float, optional
        Entry variance sigma^2 (the mean eigenvalue), > 0.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``m``, sorted ascending: squared singular values of W divided by N (SPEC
        section 1), which keeps the small eigenvalues' relative accuracy that forming W^T W would lose.
    """
    m = _check_count("m (the number of eigenvalues)", m)
    gamma = _check_gamma(gamma)
    sigma2 = _check_positive("sigma2", sigma2)
    n_rows = max(round(m / gamma), m)
    z = _as_generator(seed).standard_normal((n_rows, m))
    sv = scipy.linalg.svdvals(np.sqrt(sigma2) * z)
    return np.sort(sv**2 / n_rows)


def sample_correlated_spectrum(
    n: int, m: int, nu: float, scale: float = 1.0, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """Draw the M eigenvalues of W^T W / N with a power-law population covariance (SPEC section 3).

    W = sqrt(scale) X diag(sqrt(t)), X of shape N x M with iid N(0, 1) entries, t_i = i^(-nu) normalised to
    mean 1 (trace M): the finite-size counterpart of `hteval.densities.correlated_mp`.

    Parameters
    ----------
    n : int
        Number of rows N >= m (gamma = m / n <= 1).
    m : int
        Number of columns M = number of eigenvalues, >= 1.
    nu : float
        Power-law exponent of the population spectrum, finite and >= 0 (0 is white: Marchenko-Pastur).
    scale : float, optional
        Entry variance = mean eigenvalue in expectation, > 0.
    seed : int or numpy.random.Generator, optional
        An int seeds ``np.random.default_rng``; a Generator is used as given.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``m``, sorted ascending: squared singular values of W divided by N.
    """
    n = _check_count("n (the number of rows)", n)
    m = _check_count("m (the number of eigenvalues)", m)
    if m > n:
        raise ValueError(f"need m <= n (gamma = m/n in (0, 1], hteval uses the smaller Gram), got m={m}, n={n}")
    if not (np.isfinite(nu) and nu >= 0.0):
        raise ValueError(f"nu must be a finite number >= 0, got {nu!r}")
    scale = _check_positive("scale", scale)
    t = np.arange(1, m + 1, dtype=np.float64) ** -float(nu)
    t /= t.mean()
    x = _as_generator(seed).standard_normal((n, m))
    sv = scipy.linalg.svdvals(x * np.sqrt(scale * t))
    return np.sort(sv**2 / n)


def sample_pareto_tail_spectrum(
    seed: int | np.random.Generator, m: int, *, tail_fraction: float = 0.15, exponent: float = 2.5,
    sigma: float = 0.35
) -> np.ndarray:
    """Draw M iid values with a Pareto tail over a log-normal bulk: no random-matrix content, the heavy-tailed
    alternative that model comparisons must not mistake for HTMP (the `powerlaw` model's own law).

    Each value is, with probability tail_fraction, xmin u^(-1 / (exponent - 1)) (density ~ x^-exponent above
    xmin, survival x^-(exponent - 1)), and otherwise log-normal with median 1 and log-sd sigma truncated below
    xmin, where xmin = exp(sigma Phi^-1(1 - tail_fraction)) is the untruncated bulk's upper tail_fraction quantile.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``m``, sorted ascending.
    """
    from scipy import special

    m = _check_count("m (the number of eigenvalues)", m)
    if not 0.0 < tail_fraction < 1.0 or not exponent > 1.0:
        raise ValueError(f"need 0 < tail_fraction < 1 and exponent > 1, got {tail_fraction}, {exponent}")
    sigma = _check_positive("sigma", sigma)
    rng = _as_generator(seed)
    below = 1.0 - tail_fraction
    log_xmin = sigma * special.ndtri(below)
    u = rng.uniform(1e-12, 1.0 - 1e-12, size=m)
    tail = np.exp(log_xmin) * u ** (-1.0 / (exponent - 1.0))
    bulk = np.exp(sigma * special.ndtri(u * below))
    return np.sort(np.where(rng.uniform(size=m) < tail_fraction, tail, bulk))
