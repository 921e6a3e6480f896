# %% [markdown]
# # Phases of training: batch size and the repulsion kappa
#
# The seed paper's experiment at small scale on a CPU: the same network (LeNet-300-100, plain SGD, learning rate
# 0.01, the same initialisation and epochs) is trained on Fashion-MNIST at batch sizes from 2 to 1024, and the
# spectra of its two large layers are fitted with HTMP (exact likelihood: `kappa`, with calibrated intervals) and
# with the power-law tail (`alpha`). The theory predicts that smaller batches (more gradient noise, a hotter
# log-gas) give heavier-tailed spectra: smaller `kappa`. We report what we find, whichever way it goes.
#
# Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package (`bash scripts/fetch_fashion_mnist.sh`, run
# by `scripts/bootstrap.sh`). Run with `python scripts/notebooks.py 02_phases_of_training` (about 15 minutes on
# 2 cores); CI runs a reduced version (two batch sizes, one epoch on a 10,000-image subset, short chains).

# %%
import os
import warnings

# tqdm's notebook progress bars need ipywidgets, which hteval does not install: plain bars are fine
warnings.filterwarnings("ignore", message="IProgress not found")
import time

import jax

jax.config.update("jax_enable_x64", True)  # for hteval; the training itself runs in float32

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

import hteval
from experiments.fashion_mnist import load
from experiments.training import init_params, train

REDUCED = os.environ.get("HTEVAL_NOTEBOOKS_REDUCED") == "1"
BATCH_SIZES = [8, 1024] if REDUCED else [2, 8, 32, 128, 512, 1024]
EPOCHS = 1 if REDUCED else 10
SAMPLER = dict(chains=2, draws=300, warmup=300) if REDUCED else dict(chains=4, draws=1000, warmup=1000)
LAYERS = ("fc1", "fc2")  # fc3 (100 x 10) has too few eigenvalues for a spectrum

x, y = load("train")
x_test, y_test = load("test")
if REDUCED:
    x, y = x[:10_000], y[:10_000]
print(f"{len(x)} training and {len(x_test)} test images; batch sizes {BATCH_SIZES}, {EPOCHS} epochs each")

# %% [markdown]
# ## 1. Train one network per batch size
#
# Same seed everywhere: the initial weights are identical, and the only difference is the batch size (hence also
# the number of SGD steps: an epoch is 60,000 / batch size steps).

# %%
networks = {}
for b in BATCH_SIZES:
    start = time.perf_counter()
    networks[b] = train(x, y, x_test, y_test, batch_size=b, epochs=EPOCHS)
    print(f"batch {b:5d}: {networks[b].steps:7d} steps, train accuracy {networks[b].train_accuracy:.3f}, "
          f"test accuracy {networks[b].test_accuracy:.3f}  ({time.perf_counter() - start:.0f} s)")
initial = {f"fc{i + 1}": np.asarray(p["w"]) for i, p in enumerate(init_params(jax.random.fold_in(
    jax.random.PRNGKey(0), 0)))}

# %% [markdown]
# ## 2. Fit HTMP (exact likelihood) and the power-law tail to every layer
#
# Each weight matrix becomes a layer record (`hteval.spectrum`: eigenvalues of `W^T W / N`); the initial weights
# are fitted too, as the random reference. A fit that does not converge is kept in the table with
# `converged = False` and left out of the figures.

# %%
def fit_row(weights, label, batch_size, layer, test_accuracy):
    rec = hteval.spectrum(weights.astype(np.float64), name=f"{label}.{layer}")
    row = {"batch_size": batch_size, "layer": layer, "M": rec.M, "gamma": rec.gamma,
           "test_accuracy": test_accuracy}
    exact = hteval.fit(rec, model="htmp-exact", **SAMPLER, max_draws=4 * SAMPLER["draws"])
    tail = hteval.fit(rec, model="powerlaw", **SAMPLER, max_draws=4 * SAMPLER["draws"])
    for name, result, parameter in (("kappa", exact, "kappa"), ("alpha", tail, "alpha")):
        s = result.summary.loc[parameter]
        row.update({f"{name}_median": s["median"], f"{name}_ci_low": s["ci_low"], f"{name}_ci_high": s["ci_high"],
                    f"{name}_converged": result.converged})
    return rec, row


rows, spectra = [], {}
start = time.perf_counter()
for layer in LAYERS:
    rec, row = fit_row(initial[layer], "init", 0, layer, np.nan)
    spectra[(0, layer)] = rec.eigenvalues
    rows.append(row)
for b, net in networks.items():
    for layer in LAYERS:
        rec, row = fit_row(net.weights[layer], f"bs{b}", b, layer, net.test_accuracy)
        spectra[(b, layer)] = rec.eigenvalues
        rows.append(row)
table = pd.DataFrame(rows)
print(f"{len(rows) * 2} fits in {time.perf_counter() - start:.0f} s")
table.round(3)

# %% [markdown]
# ## 3. The ESDs side by side
#
# Histograms of log10 eigenvalue for each batch size (batch 0 = the random initialisation). The seed paper's
# phases run from random-like (a Marchenko-Pastur bulk), through bulk + spikes and bleeding-out, to heavy-tailed;
# a heavier right tail and a wider spread in log scale mean a smaller kappa.

# %%
fig, axes = plt.subplots(len(LAYERS), len(BATCH_SIZES) + 1, figsize=(2.2 * (len(BATCH_SIZES) + 1), 2.2 * len(LAYERS)),
                         sharex="row", constrained_layout=True)
for i, layer in enumerate(LAYERS):
    for j, b in enumerate([0, *BATCH_SIZES]):
        ax = axes[i, j]
        ax.hist(np.log10(spectra[(b, layer)]), bins=40, color="C0" if b else "0.6", density=True)
        ax.set_title(("initial" if b == 0 else f"batch {b}") + f", {layer}", fontsize=8)
        ax.set_yticks([])
        if i == len(LAYERS) - 1:
            ax.set_xlabel(r"$\log_{10}$ eigenvalue", fontsize=8)
plt.show()

# %% [markdown]
# ## 4. kappa against batch size, and test accuracy against kappa
#
# Posterior medians with 90% intervals (exact likelihood: intervals calibrated by simulation). Open markers: fits
# that did not converge.

# %%
trained = table[table.batch_size > 0]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
for k, layer in enumerate(LAYERS):
    part = trained[trained.layer == layer]
    ok = part.kappa_converged.to_numpy(dtype=bool)
    err = [part.kappa_median - part.kappa_ci_low, part.kappa_ci_high - part.kappa_median]
    axes[0].errorbar(part.batch_size * (1 + 0.06 * k), part.kappa_median, yerr=err, fmt="none", color=f"C{k}")
    axes[0].plot(part.batch_size[ok] * (1 + 0.06 * k), part.kappa_median[ok], "o", color=f"C{k}", label=layer)
    axes[0].plot(part.batch_size[~ok] * (1 + 0.06 * k), part.kappa_median[~ok], "o", mfc="white", color=f"C{k}")
    init = table[(table.batch_size == 0) & (table.layer == layer)].kappa_median.iloc[0]
    axes[0].axhline(init, color=f"C{k}", ls=":", lw=0.8)
    aerr = [part.alpha_median - part.alpha_ci_low, part.alpha_ci_high - part.alpha_median]
    axes[1].errorbar(part.batch_size * (1 + 0.06 * k), part.alpha_median, yerr=aerr, fmt="o", color=f"C{k}",
                     label=layer)
    axes[2].errorbar(part.kappa_median, part.test_accuracy, xerr=err, fmt="o", color=f"C{k}", label=layer)
axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel=r"$\kappa$ (median, 90% interval)",
            title=r"HTMP repulsion $\kappa$ (dotted: initial weights)")
axes[1].set(xscale="log", xlabel="batch size", ylabel=r"power-law $\alpha$", title="power-law tail exponent")
axes[2].set(xscale="log", xlabel=r"$\kappa$", ylabel="test accuracy", title=r"test accuracy against $\kappa$")
for ax in axes:
    ax.legend(frameon=False, fontsize=8)
plt.show()

# %% [markdown]
# ## 5. What we find
#
# Computed from the table above, not written in advance: the rank correlation of kappa with batch size per layer
# (the theory predicts a positive one: smaller batches, smaller kappa), and whether the smallest batch's interval
# lies wholly below the largest batch's.

# %%
for layer in LAYERS:
    part = trained[(trained.layer == layer) & trained.kappa_converged.astype(bool)].sort_values("batch_size")
    if len(part) < 2:
        print(f"{layer}: fewer than two converged fits; nothing to say")
        continue
    rho, p = stats.spearmanr(part.batch_size, part.kappa_median)
    small, large = part.iloc[0], part.iloc[-1]
    separated = small.kappa_ci_high < large.kappa_ci_low
    direction = "as the theory predicts" if rho > 0 else "against the theory's prediction"
    print(f"{layer}: Spearman rho(batch size, kappa) = {rho:+.2f} (p = {p:.2g}, {len(part)} batch sizes), "
          f"{direction}; batch {small.batch_size}: kappa {small.kappa_median:.3g} "
          f"[{small.kappa_ci_low:.3g}, {small.kappa_ci_high:.3g}], batch {large.batch_size}: "
          f"{large.kappa_median:.3g} [{large.kappa_ci_low:.3g}, {large.kappa_ci_high:.3g}]; intervals "
          + ("separated" if separated else "overlap"))
acc = trained.groupby("batch_size").test_accuracy.first()
print("test accuracy by batch size:", ", ".join(f"{b}: {a:.3f}" for b, a in acc.items()))

# %% [markdown]
# **Caveat.** With the learning rate and the number of epochs held fixed, a smaller batch also takes more SGD
# steps (300,000 at batch 2, 580 at batch 1024), so this design, like the seed paper's, does not separate the
# gradient noise of small batches from the length of training; nor does one seed per batch size say how much
# kappa varies between runs. Fixing the number of steps instead, or scaling the learning rate with the batch
# size, and several seeds per size, are the experiments that would separate them.
