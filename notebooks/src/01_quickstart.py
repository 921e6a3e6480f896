# %% [markdown]
# # hteval quickstart: a whole network, one layer's posterior, and a model comparison
#
# We fit the high-temperature Marchenko-Pastur ensemble (HTMP) to every layer of a real network, the
# all-MiniLM-L6-v2 sentence encoder bundled with hteval, then look closely at one layer: the credible interval of
# its repulsion `kappa`, convergence, the fit, and a comparison of ensemble models by their exact marginal
# likelihoods. Last, the same call on a model in memory.
#
# Run top to bottom with `python scripts/notebooks.py 01_quickstart` (CI runs a reduced version: fewer draws).

# %%
import os
import warnings

# tqdm's notebook progress bars need ipywidgets, which hteval does not install: plain bars are fine
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import hteval
from hteval.io import bundled_checkpoint
from hteval.predictive import add_posterior_predictive
from hteval.report.figures import plot_comparison, plot_esd, plot_rank

REDUCED = os.environ.get("HTEVAL_NOTEBOOKS_REDUCED") == "1"
SAMPLER = dict(chains=2, draws=300, warmup=300) if REDUCED else dict(chains=4, draws=1000, warmup=1000)
OUT = "notebooks/output/01_quickstart"
os.makedirs(OUT, exist_ok=True)
print("reduced run" if REDUCED else "full run", SAMPLER)

# %% [markdown]
# ## 1. Every layer of the network
#
# `hteval.analyze` takes a checkpoint path (safetensors, PyTorch, NumPy) or a model in memory (section 4) and
# fits the default model, HTMP's exact finite-size likelihood, to every weight matrix. It returns an `Analysis`:
# `.table` is the layers table (one row per layer, `kappa_median`, `kappa_ci_low`, `kappa_ci_high`, the fit check
# `ppc_pvalue` and `misfit`, diagnostics), `.layer(name)` one layer's posterior, `.plot()` the forest plot. With no
# `out=` folder nothing is written to disk; `.save(folder)` writes what `hteval analyze --out folder` writes.

# %%
checkpoint = bundled_checkpoint()
analysis = hteval.analyze(checkpoint)
analysis

# %%
analysis.plot()

# %%
analysis.table[["name", "gamma", "kappa_median", "kappa_ci_low", "kappa_ci_high", "ppc_pvalue", "status"]].head(8)

# %% [markdown]
# One layer's spectrum: the eigenvalues of `W^T W / N` in float64, the aspect ratio `gamma = M / N`, and how many
# eigenvalues fell below the dtype's resolution floor (censored, not dropped).

# %%
name = "encoder.layer.2.intermediate.dense.weight"
rec = hteval.load_spectra(checkpoint, layers=[name])[0]
print(f"{rec.name}: shape {rec.shape}, M = {rec.M}, gamma = {rec.gamma:.3g}, "
      f"{rec.n_eigs} eigenvalues kept, {rec.n_censored} censored")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(np.log10(rec.eigenvalues), bins=50, color="0.6")
ax.set_xlabel(r"$\log_{10}$ eigenvalue of $W^T W / N$")
ax.set_ylabel("count")
ax.set_title(rec.name, fontsize=10)
plt.show()

# %% [markdown]
# ## 2. One layer's posterior
#
# The default model, `htmp-exact`, is HTMP's exact finite-size joint likelihood: its intervals were checked by
# simulation-based calibration (docs/validation.md). `analysis.layer(name)` is that layer's `FitResult`, the same
# as `hteval.fit(rec)`: the posterior summary, the diagnostics and an ArviZ DataTree. `T = M / kappa` is the
# log-gas temperature.

# %%
result = analysis.layer(name)
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
comparison = hteval.compare(rec, models=("htmp-exact", "mp", "htmp", "powerlaw"), **SAMPLER)
print("best:", comparison.best)  # hteval's warnings above say which fits or LOO estimates are not to be trusted
comparison.table

# %%
for figure in plot_comparison(comparison, OUT):
    display(Image(filename=str(figure)))

# %% [markdown]
# ## 4. A model in memory
#
# The same call reads a model where it lives: a torch `nn.Module` (Hugging Face models included, names as in its
# `state_dict`), a JAX pytree (flax, equinox), a Keras 3 model or a dict of arrays (docs/frameworks.md). Here a
# small torch network, untrained: its layers should sit close to Marchenko-Pastur (large `kappa`). The analysis is
# saved and read back with `hteval.load_analysis`.

# %%
import torch

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
untrained = hteval.analyze(net)
display(untrained)
untrained.save(f"{OUT}/untrained")
hteval.load_analysis(f"{OUT}/untrained").table[["name", "kappa_median", "kappa_ci_low", "kappa_ci_high"]]
