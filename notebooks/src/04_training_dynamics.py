# %% [markdown]
# # Training dynamics: kappa of each layer, checkpoint by checkpoint
#
# A study of how spectra change during training fits every layer of every checkpoint. Here: LeNet-300-100 trained
# by plain SGD on Fashion-MNIST at batch size 8 (the small-batch regime of notebook 02, where the spectra turn
# heavy-tailed), with a checkpoint after every epoch. `hteval analyze` takes the whole folder of checkpoints: one
# task per checkpoint (here one after another; `--engine dask` spreads them over a Dask cluster), every row
# gathered into one table indexed by checkpoint, step and layer, and the training-dynamics view: kappa with its
# calibrated interval against the SGD step, per layer, as a table and a figure.
#
# Run with `python scripts/notebooks.py 04_training_dynamics` (about 5 minutes on 2 cores); CI runs a reduced
# version (three epochs on a 10,000-image subset, short chains).

# %%
import os
import shutil
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
# ## 1. Train, writing a checkpoint per epoch
#
# `step_S.safetensors` holds the weights after S SGD steps (step 0: the initialisation); hteval reads the step
# from the file name. fc3 (100 x 10) has too few eigenvalues for a spectrum and is listed as skipped.

# %%
def save(step, weights):
    save_file({f"{name}.weight": w for name, w in weights.items()}, f"{CHECKPOINTS}/step_{step}.safetensors")


network = train(x, y, x_test, y_test, batch_size=BATCH_SIZE, epochs=EPOCHS, on_epoch=save)
print(f"{network.steps} SGD steps, test accuracy {network.test_accuracy:.3f}")
print(sorted(os.listdir(CHECKPOINTS), key=lambda n: int(n.split("_")[1].split(".")[0])))

# %% [markdown]
# ## 2. Every layer of every checkpoint
#
# The same as `hteval analyze notebooks/output/04_training_dynamics/run --out DIR` on the command line.

# %%
table = analyze_checkpoints(CHECKPOINTS, f"{OUT}/analysis", **ANALYZE)
fitted = table[table.model.notna()]
print(table.status.value_counts().to_dict())
fitted[["checkpoint", "step", "name", "kappa_median", "kappa_ci_low", "kappa_ci_high", "r_hat", "status"]].round(3)

# %% [markdown]
# ## 3. The training-dynamics view
#
# One panel per layer: the posterior median of kappa and its 90% interval (log scale) at each checkpoint. A fit
# that did not converge would be drawn hollow, in red.

# %%
display(Image(filename=f"{OUT}/analysis/dynamics_kappa_htmp-exact.png"))

# %%
# dynamics.md's tables, without its heading and its image link (the figure is shown above)
report = open(f"{OUT}/analysis/dynamics.md").read().split("\n", 4)[4]
display(Markdown("\n".join(line for line in report.splitlines() if not line.startswith("!["))))

# %% [markdown]
# How far does each layer move from its initial spectrum, and when? The ratio of kappa to its value at
# initialisation, per epoch:

# %%
dynamics = pd.read_csv(f"{OUT}/analysis/dynamics.csv")
kappa = dynamics[dynamics.parameter == "kappa"].pivot(index="step", columns="name", values="median")
(kappa / kappa.iloc[0]).round(3)

# %%
first, last = kappa.iloc[0], kappa.iloc[-1]
for layer in kappa.columns:
    falls = np.all(np.diff(kappa[layer].to_numpy()) < 0)
    print(f"{layer}: kappa {first[layer]:.3g} at step 0 -> {last[layer]:.3g} at step {kappa.index[-1]} "
          f"({'falls at every epoch' if falls else 'not monotone'})")
