"""A small fully connected network trained by plain SGD in JAX (optax), for the batch-size experiment.

Everything but the batch size is held fixed (architecture, learning rate, epochs, initialisation, data order's
seed), as in the seed paper's experiment, so differences between the trained layers' spectra come from the
batch size. Training runs in float32 (hteval's inference is float64; the weights are upcast when their spectra
are taken). One epoch is one `lax.scan` over its mini-batches, so small batches cost no Python per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

#: LeNet-300-100: the layers fc1 (784 x 300) and fc2 (300 x 100) have spectra of 300 and 100 eigenvalues
LAYER_SIZES = (784, 300, 100, 10)


@dataclass
class Trained:
    batch_size: int
    epochs: int
    weights: dict[str, np.ndarray]  # layer name -> (in, out) float32 weight matrix
    train_accuracy: float
    test_accuracy: float
    steps: int


def init_params(key, sizes=LAYER_SIZES) -> list[dict[str, jax.Array]]:
    """He-normal weights (variance 2 / fan_in) and zero biases, float32."""
    params = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:], strict=True),
                                strict=True):
        w = jax.random.normal(k, (n_in, n_out), dtype=jnp.float32) * jnp.sqrt(2.0 / n_in).astype(jnp.float32)
        params.append({"w": w, "b": jnp.zeros(n_out, dtype=jnp.float32)})
    return params


def logits(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


def accuracy(params, x, y, chunk: int = 10_000) -> float:
    hits = sum(int(jnp.sum(jnp.argmax(logits(params, x[i:i + chunk]), axis=1) == y[i:i + chunk]))
               for i in range(0, len(x), chunk))
    return hits / len(x)


def train(x, y, x_test, y_test, *, batch_size: int, epochs: int, learning_rate: float = 0.01,
          seed: int = 0, on_epoch=None) -> Trained:
    """Plain SGD (no momentum, no weight decay) for `epochs` passes over the data in `batch_size` mini-batches.

    on_epoch(step, weights) is called with the initial weights (step 0) and after every epoch (step = SGD steps
    so far), weights as in Trained.weights: what a run's checkpoints hold.
    """
    optimizer = optax.sgd(learning_rate)
    key = jax.random.PRNGKey(seed)
    params = init_params(jax.random.fold_in(key, 0))
    state = optimizer.init(params)
    steps = len(x) // batch_size
    x, y = jnp.asarray(x, dtype=jnp.float32), jnp.asarray(y)

    @jax.jit
    def epoch(params, state, order):
        batches = order[:steps * batch_size].reshape(steps, batch_size)

        def step(carry, index):
            params, state = carry
            grads = jax.grad(_loss)(params, x[index], y[index])
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, state), batches)
        return params, state

    names = [f"fc{i + 1}" for i in range(len(params))]
    if on_epoch is not None:
        on_epoch(0, _weights(names, params))
    for e in range(epochs):
        params, state = epoch(params, state, jax.random.permutation(jax.random.fold_in(key, e + 1), len(x)))
        if on_epoch is not None:
            on_epoch((e + 1) * steps, _weights(names, params))
    return Trained(batch_size=batch_size, epochs=epochs,
                   weights=_weights(names, params),
                   train_accuracy=accuracy(params, x, y), test_accuracy=accuracy(params, jnp.asarray(x_test), y_test),
                   steps=steps * epochs)


def _weights(names, params) -> dict[str, np.ndarray]:
    return {n: np.asarray(p["w"]) for n, p in zip(names, params, strict=True)}
