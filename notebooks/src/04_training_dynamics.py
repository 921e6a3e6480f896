# %% [markdown]
# # Training dynamics: kappa of each layer, step by step
#
# A study of how spectra change during training fits every layer at many points of a run. Here: LeNet-300-100
# trained by plain SGD on Fashion-MNIST at batch size 8 (the small-batch regime of notebook 02, where the spectra
# turn heavy-tailed), recorded after every epoch by a `hteval.Tracker` inside the training loop: each
# `update(step, weights)` fits every layer (milliseconds a layer with the default exact likelihood) and appends the
# rows to one table indexed by checkpoint, step and layer; leaving its `with` block draws the training-dynamics
# view: kappa with its calibrated interval against the SGD step, per layer, as a table and a figure. The same hook
# also saves a checkpoint per epoch, and section 5 shows that `analyze_checkpoints` over the saved files (what
# `hteval analyze FOLDER` runs) gives the same table.
#
# Run with `python scripts/notebooks.py 04_training_dynamics` (about a minute on 2 cores); CI runs a reduced
# version (three epochs on a 10,000-image subset, short chains).

# %%
import os
import shutil
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")

import jax

jax.config.update("jax_enable_x64", True)  # for hteval; the training itself runs in float32

import numpy as np
import pandas as pd
from IPython.display import Image, Markdown, display
from safetensors.numpy import save_file

from experiments.fashion_mnist import load
from experiments.training import train
from hteval import Tracker
from hteval.checkpoints import analyze_checkpoints

REDUCED = os.environ.get("HTEVAL_NOTEBOOKS_REDUCED") == "1"
BATCH_SIZE = 8
EPOCHS = 3 if REDUCED else 10
ANALYZE = dict(chains=2, draws=300, warmup=200, max_draws=600) if REDUCED else {}  # else analyze's defaults
OUT = "notebooks/output/04_training_dynamics"
shutil.rmtree(OUT, ignore_errors=True)  # a fresh run, not a resumed one
CHECKPOINTS = f"{OUT}/run"
os.makedirs(CHECKPOINTS)

x, y = load("train")
x_test, y_test = load("test")
if REDUCED:
    x, y = x[:10_000], y[:10_000]

# %% [markdown]
# ## 1. Train, recording every epoch
#
# `train` calls its hook with the initial weights (step 0) and after every epoch (S = SGD steps so far; an epoch
# is one compiled `lax.scan`, so the epoch's end is where Python sees the weights). The hook hands them to the
# tracker and saves them as `step_S.safetensors`. fc3 (100 x 10) has too few eigenvalues for a spectrum and is
# listed as skipped.

# %%
tracker = Tracker(f"{OUT}/tracked", **ANALYZE)
seconds = []


def record(step, weights):
    weights = {f"{name}.weight": w for name, w in weights.items()}
    start = time.perf_counter()
    tracker.update(step, weights)
    seconds.append(time.perf_counter() - start)
    save_file(weights, f"{CHECKPOINTS}/step_{step}.safetensors")


with tracker:  # leaving the block draws the dynamics view
    network = train(x, y, x_test, y_test, batch_size=BATCH_SIZE, epochs=EPOCHS, on_epoch=record)
print(f"{network.steps} SGD steps, test accuracy {network.test_accuracy:.3f}")
print(f"{tracker}; an update took {np.median(seconds[1:]):.2f} s (median after the first)")

# %% [markdown]
# ## 2. Every layer at every recorded step
#
# `tracker.table` is the tracker's `checkpoints.csv`: one row per layer and step, the checkpoint named `step_S` as
# `analyze_checkpoints` names a saved `step_S.safetensors`.

# %%
table = tracker.table
fitted = table[table.model.notna()]
print(table.status.value_counts().to_dict())
fitted[["checkpoint", "step", "name", "kappa_median", "kappa_ci_low", "kappa_ci_high", "r_hat", "status"]].round(3)

# %% [markdown]
# ## 3. The training-dynamics view
#
# One panel per layer: the posterior median of kappa and its 90% interval (log scale) at each recorded step. A
# fit that did not converge would be drawn hollow, in red.

# %%
display(Image(filename=f"{OUT}/tracked/dynamics_kappa_htmp-exact.png"))

# %%
# dynamics.md's tables, without its heading and its image link (the figure is shown above)
report = open(f"{OUT}/tracked/dynamics.md").read().split("\n", 4)[4]
display(Markdown("\n".join(line for line in report.splitlines() if not line.startswith("!["))))

# %% [markdown]
# ## 4. When does each layer move?
#
# The ratio of kappa to its value at initialisation, per epoch:

# %%
dynamics = pd.read_csv(f"{OUT}/tracked/dynamics.csv")
kappa = dynamics[dynamics.parameter == "kappa"].pivot(index="step", columns="name", values="median")
(kappa / kappa.iloc[0]).round(3)

# %%
first, last = kappa.iloc[0], kappa.iloc[-1]
for layer in kappa.columns:
    falls = np.all(np.diff(kappa[layer].to_numpy()) < 0)
    print(f"{layer}: kappa {first[layer]:.3g} at step 0 -> {last[layer]:.3g} at step {kappa.index[-1]} "
          f"({'falls at every epoch' if falls else 'not monotone'})")

# %% [markdown]
# ## 5. Saved checkpoints give the same table
#
# `analyze_checkpoints` over the folder of saved checkpoints, the same as
# `hteval analyze notebooks/output/04_training_dynamics/run --out DIR` on the command line: one task per checkpoint
# (`--engine dask` spreads them over a Dask cluster). Each layer's random numbers derive from the seed and its
# name, so its rows are the tracker's, number for number (the fit times aside).

# %%
saved = analyze_checkpoints(CHECKPOINTS, f"{OUT}/analysis", **ANALYZE)
pd.testing.assert_frame_equal(saved.drop(columns="seconds"), table.drop(columns="seconds"))
print(f"the same {len(saved)} rows from {saved.checkpoint.nunique()} saved checkpoints")
