"""Figures of one fit, for a paper: ESD with the posterior density, rank-ordered spectrum, trace and pair plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: hteval never opens windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hteval.densities.mp import mp_logpdf  # noqa: E402
from hteval.predictive import log_density_draws, predictive_spectra  # noqa: E402

_LABELS = {"htmp": "HTMP", "inverse-htmp": "inverse HTMP", "mp": "MP + outliers"}


def _eigenvalues(result) -> np.ndarray:
    return np.sort(np.asarray(result.data["observed_data"]["obs"].values).ravel())


def plot_esd(result, path: Path, prob: float = 0.9) -> Path:
    """ESD histogram on a log x axis (density of log10 x) with the posterior density median and band, and MP."""
    x = _eigenvalues(result)
    grid = np.geomspace(x.min() / 2, x.max() * 2, 400)
    logf = log_density_draws(result, grid)
    # density of log10(x) = f(x) x ln 10, comparable with a histogram of log10 x
    dens = np.exp(logf) * grid * np.log(10)
    lo, mid, hi = np.quantile(dens, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    mp = np.exp(np.asarray(mp_logpdf(grid, result.record["gamma"], float(x.mean())))) * grid * np.log(10)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    heights, *_ = ax.hist(np.log10(x), bins=min(60, max(15, x.size // 8)), density=True, color="0.8", label="ESD")
    ax.fill_between(np.log10(grid), lo, hi, color="C0", alpha=0.3, label=f"{_LABELS[result.model]} {prob:.0%} band")
    ax.plot(np.log10(grid), mid, color="C0", label=f"{_LABELS[result.model]} posterior median")
    ax.plot(np.log10(grid), mp, color="C3", ls="--", label=r"MP, $\sigma^2$ = mean eigenvalue")
    ax.set_xlabel(r"$\log_{10}$ eigenvalue")
    ax.set_ylabel(r"density of $\log_{10}$ eigenvalue")
    ax.set_title(f"{result.record['name']}  (M = {result.record['M']}, $\\gamma$ = {result.record['gamma']:.3g})")
    ax.set_ylim(0, 1.3 * max(hi.max(), heights.max(), mp.max()))
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_rank(result, path: Path, prob: float = 0.9, n: int = 100) -> Path:
    """Rank-ordered spectrum (log-log) against posterior predictive spectra: tail misfit shows at low ranks."""
    title = f"{result.record['name']}: {_LABELS[result.model]}"
    return _rank_figure(_eigenvalues(result), predictive_spectra(result, n), prob, "posterior predictive", title,
                        path)


def plot_prior_predictive(result, path: Path, prob: float = 0.9) -> Path:
    """Rank-ordered spectrum against the prior predictive spectra (`hteval.predictive.add_prior_predictive`): the
    priors should cover the observed spectrum comfortably, far wider than the posterior band."""
    spectra = np.asarray(result.data["prior_predictive"]["obs"].values)[0]
    title = f"{result.record['name']}: {_LABELS[result.model]}, prior predictive check"
    x = _eigenvalues(result)
    # kappa near 1e-3 puts prior quantiles at the bottom of double precision; the band is drawn to 6 decades
    # around the data, where a reader can still see the observed spectrum
    window = (x.min() * 1e-6, x.max() * 1e6)
    return _rank_figure(x, spectra, prob, "prior predictive", title + " (band clipped to the data +- 6 decades)",
                        path, ylim=window)


def _rank_figure(x, spectra, prob, what, title, path, ylim=None):
    x, spectra = x[::-1], spectra[:, ::-1]
    rank = np.arange(1, x.size + 1)
    lo, mid, hi = np.quantile(spectra, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.fill_between(rank, lo, hi, color="C0", alpha=0.3, label=f"{what} {prob:.0%}")
    ax.plot(rank, mid, color="C0", lw=1, label=f"{what} median")
    ax.plot(rank, x, "k.", ms=3, label="observed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_trace_pair(result, path: Path) -> Path:
    """Trace of each parameter per chain, and the pair plot of the first two (log scale)."""
    post = result.data["posterior"].to_dataset()
    names = list(result.summary.index)[:2]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
    for ax, name in zip(axes[:2], names, strict=True):
        for chain in post[name].values:
            ax.plot(chain, lw=0.5)
        ax.set_title(f"{name}  (R-hat {result.summary.loc[name, 'r_hat']:.3f})")
        ax.set_xlabel("draw")
    a, b = (post[n].values.ravel() for n in names)
    axes[2].plot(a, b, ".", ms=1.5, alpha=0.4)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel(names[0])
    axes[2].set_ylabel(names[1])
    if not result.converged:
        fig.suptitle("NOT CONVERGED: " + "; ".join(result.diagnostics["reasons"]), color="C3", fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
