# %% [markdown]
# # hteval quickstart: one real layer, its posterior, and a model comparison
#
# We fit the high-temperature Marchenko-Pastur ensemble (HTMP) to one layer of a real network, the
# all-MiniLM-L6-v2 sentence encoder bundled with hteval, read the credible interval of its repulsion `kappa`,
# check convergence and the fit, and compare ensemble models by their exact marginal likelihoods.
#
# Run top to bottom with `python scripts/notebooks.py 01_quickstart` (CI runs a reduced version: fewer draws).

# %%
import os
import warnings

# tqdm's notebook progress bars need ipywidgets, which hteval does not install: plain bars are fine
warnings.filterwarnings("ignore", message="IProgress not found")

import jax

jax.config.update("jax_enable_x64", True)  # hteval's inference is float64 throughout

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import hteval
from hteval.model_comparison import compare
from hteval.io import bundled_checkpoint
from hteval.report.figures import plot_comparison, plot_esd, plot_rank
from hteval.predictive import add_posterior_predictive

REDUCED = os.environ.get("HTEVAL_NOTEBOOKS_REDUCED") == "1"
SAMPLER = dict(chains=2, draws=300, warmup=300) if REDUCED else dict(chains=4, draws=1000, warmup=1000)
OUT = "notebooks/output/01_quickstart"
os.makedirs(OUT, exist_ok=True)
print("reduced run" if REDUCED else "full run", SAMPLER)

# %% [markdown]
# ## 1. The layer's spectrum
#
# `load_spectra` reads a checkpoint (safetensors, PyTorch, NumPy) and returns one record per layer: the
# eigenvalues of `W^T W / N` in float64, the aspect ratio `gamma = M / N`, and how many eigenvalues fell below the
# dtype's resolution floor (censored, not dropped).

# %%
checkpoint = bundled_checkpoint()
layers = {rec.name: rec for rec in hteval.load_spectra(checkpoint)}
rec = layers["encoder.layer.2.intermediate.dense.weight"]
print(f"{rec.name}: shape {rec.shape}, M = {rec.M}, gamma = {rec.gamma:.3g}, "
      f"{rec.n_eigs} eigenvalues kept, {rec.n_censored} censored")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(np.log10(rec.eigenvalues), bins=50, color="0.6")
ax.set_xlabel(r"$\log_{10}$ eigenvalue of $W^T W / N$")
ax.set_ylabel("count")
ax.set_title(rec.name, fontsize=10)
plt.show()

# %% [markdown]
# ## 2. Fit HTMP with its exact likelihood
#
# The default model, `htmp-exact`, is HTMP's exact finite-size joint likelihood: its intervals were checked by
# simulation-based calibration (README, "Calibrated uncertainty"). The result carries the posterior summary,
# the diagnostics and an ArviZ DataTree. `T = M / kappa` is the log-gas temperature.

# %%
result = hteval.fit(rec, **SAMPLER, max_draws=4 * SAMPLER["draws"])
print("converged:", result.converged, result.diagnostics["reasons"] or "")
print("intervals:", result.to_json()["intervals_note"])
# does HTMP describe this layer at all? exact replicate spectra, misfit below p = 0.01 (docs/goodness-of-fit.md)
print(f"posterior predictive p = {result.ppc_pvalue:.3g}, misfit: {result.misfit}")
result.summary[["median", "ci_low", "ci_high", "sd", "r_hat", "ess_bulk", "ess_tail"]]

# %%
kappa = result.summary.loc["kappa"]
print(f"kappa = {kappa['median']:.3g}, 90% interval [{kappa['ci_low']:.3g}, {kappa['ci_high']:.3g}]")
T = result.data["posterior"]["T"].values
print(f"T = M / kappa = {np.median(T):.3g}, 90% interval [{np.quantile(T, 0.05):.3g}, {np.quantile(T, 0.95):.3g}]")
result.data

# %% [markdown]
# The ESD against the posterior density (median and 90% band; MP for reference), and the rank-ordered spectrum
# against posterior predictive spectra drawn with the exact finite-size sampler: the posterior predictive check.

# %%
add_posterior_predictive(result, seed=0)
display(Image(filename=str(plot_esd(result, f"{OUT}/esd.png"))))
display(Image(filename=str(plot_rank(result, f"{OUT}/rank.png"))))

# %% [markdown]
# ## 3. Compare ensemble models
#
# Every model's exact marginal likelihood (`log_evidence`, by the same quadrature that draws its posterior) is
# the probability each gives the whole observed spectrum, so the joint `htmp-exact` and the iid models are
# compared on the same footing. `weight` is each model's posterior probability among those compared (equal prior
# odds), `log_evidence_wide` the evidence with priors twice as wide (prior sensitivity). PSIS-LOO and its
# stacking weights (`stacking_weight`) are there for the iid models, which have pointwise likelihoods.
# `ppc_pvalue` is each fit's posterior predictive p-value.

# %%
comparison = compare(rec, models=("htmp-exact", "mp", "htmp", "powerlaw"), **SAMPLER)
print("best:", comparison.best)  # hteval's warnings above say which fits or LOO estimates are not to be trusted
comparison.table

# %%
for figure in plot_comparison(comparison, OUT):
    display(Image(filename=str(figure)))
