"""Figures of one fit, for a paper: ESD with the posterior density, rank-ordered spectrum, trace and pair plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: hteval never opens windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hteval import calibration, names  # noqa: E402
from hteval.densities.mp import mp_logpdf  # noqa: E402
from hteval.predictive import log_density_draws, predictive_spectra  # noqa: E402

_LABELS = names.MODEL_LABELS


def band_label(model: str, prob: float) -> str:
    """Legend text of a model's credible band, which says when its intervals are not calibrated."""
    caveat = "" if calibration.intervals(model) == names.INTERVALS_CALIBRATED else " (uncalibrated, iid likelihood)"
    return f"{_LABELS[model]} {prob:.0%} band{caveat}"


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
    ax.fill_between(np.log10(grid), lo, hi, color="C0", alpha=0.3, label=band_label(result.model, prob))
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
    """Trace of each parameter per chain, and the pair plot of the first two (log axes for positive ones)."""
    post = result.data["posterior"].to_dataset()
    shown = list(result.summary.index)[:2]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
    for ax, name in zip(axes[:2], shown, strict=True):
        for chain in post[name].values:
            ax.plot(chain, lw=0.5)
        ax.set_title(f"{name}  (R-hat {result.summary.loc[name, 'r_hat']:.3f})")
        ax.set_xlabel("draw")
    a, b = (post[n].values.ravel() for n in shown)
    axes[2].plot(a, b, ".", ms=1.5, alpha=0.4)
    if np.all(a > 0):
        axes[2].set_xscale("log")
    if np.all(b > 0):
        axes[2].set_yscale("log")
    axes[2].set_xlabel(shown[0])
    axes[2].set_ylabel(shown[1])
    if not result.converged:
        fig.suptitle("NOT CONVERGED: " + "; ".join(result.diagnostics["reasons"]), color="C3", fontsize=9)
    return _save(fig, path)


def plot_comparison(comparison, out: Path, prob: float = 0.9) -> list[Path]:
    """The figures of `hteval compare`: every model's posterior density over the ESD, every model's posterior
    predictive rank-ordered spectrum over the observed one, and the ELPD differences with their errors."""
    out = Path(out)
    return [_comparison_density(comparison, out / "compare_density.png"),
            _comparison_rank(comparison, out / "compare_rank.png", prob),
            _comparison_elpd(comparison, out / "compare_elpd.png")]


def _model_label(comparison, model):
    weight = comparison.table.loc[model, names.WEIGHT]
    flag = "" if comparison.table.loc[model, names.CONVERGED] else ", not converged"
    return f"{_LABELS[model]} (w = {weight:.2f}{flag})"


def _comparison_density(comparison, path):
    first = next(iter(comparison.fits.values()))
    x = _eigenvalues(first)
    grid = np.geomspace(x.min() / 2, x.max() * 2, 400)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    heights, *_ = ax.hist(np.log10(x), bins=min(60, max(15, x.size // 8)), density=True, color="0.85", label="ESD")
    top = heights.max()
    for i, model in enumerate(comparison.table.index):
        dens = np.median(np.exp(log_density_draws(comparison.fits[model], grid, n=100)), axis=0)
        dens = dens * grid * np.log(10)
        top = max(top, np.quantile(dens, 0.99))
        ax.plot(np.log10(grid), dens, color=f"C{i}", lw=1.5 if i == 0 else 1, label=_model_label(comparison, model))
    ax.set_ylim(0, 1.3 * top)
    ax.set_xlabel(r"$\log_{10}$ eigenvalue")
    ax.set_ylabel(r"density of $\log_{10}$ eigenvalue")
    ax.set_title(f"{comparison.layer}: posterior median densities (best first)", fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    return _save(fig, path)


def _comparison_rank(comparison, path, prob):
    first = next(iter(comparison.fits.values()))
    x = _eigenvalues(first)[::-1]
    rank = np.arange(1, x.size + 1)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for i, model in enumerate(comparison.table.index):
        spectra = np.asarray(comparison.fits[model].data["posterior_predictive"]["obs"].values)[0][:, ::-1]
        lo, mid, hi = np.quantile(spectra, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
        ax.fill_between(rank, lo, hi, color=f"C{i}", alpha=0.12, lw=0)
        ax.plot(rank, mid, color=f"C{i}", lw=1, label=_model_label(comparison, model))
    ax.plot(rank, x, "k.", ms=3, label="observed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(x.min() / 3, x.max() * 3)
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"{comparison.layer}: posterior predictive medians and {prob:.0%} bands", fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    return _save(fig, path)


def _comparison_elpd(comparison, path):
    table = comparison.table
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(table) + 1.4), constrained_layout=True)
    y = np.arange(len(table))[::-1]
    ax.errorbar(table[names.D_ELPD], y, xerr=table[names.D_SE], fmt="o", color="k", ms=4, capsize=3)
    ax.axvline(0, color="0.6", lw=0.8)
    # a symmetric log axis keeps close models apart when one model is hundreds of units worse
    ax.set_xscale("symlog", linthresh=max(1.0, 2.0 * float(np.median(table[names.D_SE]))))
    ax.set_yticks(y, [_model_label(comparison, m) for m in table.index], fontsize=8)
    ax.set_xlabel(r"$\Delta$ELPD (PSIS-LOO) relative to the best model, $\pm$ 1 se")
    ax.set_title(f"{comparison.layer}: model comparison", fontsize=10)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
