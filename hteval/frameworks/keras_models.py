"""A Keras 3 model or layer (any backend) -> named tensors: its variables in `model.weights` order, named by
their `.path` (`sequential/dense/kernel`).

The layer holding a variable says what it is: Conv kernels are (*spatial, in/groups, out), ConvTranspose kernels
(*spatial, out, in), depthwise kernels (*spatial, in, multiplier), EinsumDense kernels (*in, *out) in the order
of their equation, read as one (in, out) matrix. Keras is never imported here: a Keras object can only exist once
keras is loaded, so it is taken from sys.modules.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hteval.frameworks.arrays import array_record
from hteval.frameworks.common import Ties, conv_record, from_spatial_first
from hteval.io.base import NamedTensor, SkippedTensor

Layout = Callable[[NamedTensor], NamedTensor | SkippedTensor]


def is_model(obj: object) -> bool:
    """True for a Keras 3 Layer (a Model is one); never imports keras."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, getattr(keras, "Layer", ()))


def model_tensors(model: Any) -> Iterator[NamedTensor | SkippedTensor]:
    """Each variable of the model, in its order; a variable met again (shared by two layers) is skipped as tied."""
    keras = sys.modules["keras"]
    layers = list(_layers(model))
    owners = {id(v): layer for layer in layers for v in layer.weights}  # inner layers come later and win
    layouts = {id(variable): layout for layer in layers for variable, layout in _layouts(keras, layer)}
    ties = Ties()
    for variable in model.weights:
        name, shape = variable.path, tuple(int(d) for d in variable.shape)
        dtype = str(variable.dtype)
        tied = ties.skipped(("object", id(variable)), variable, name, shape, dtype)
        mode = getattr(owners.get(id(variable)), "quantization_mode", None)
        if tied is not None:
            yield tied
        elif mode and not np.issubdtype(np.dtype(dtype), np.floating):
            yield SkippedTensor(name, shape, dtype, f"{mode}-quantized Keras weight: not dequantized")
        else:
            record = array_record(name, variable.value, ties)
            layout = layouts.get(id(variable))
            yield record if layout is None or isinstance(record, SkippedTensor) else layout(record)


def _layers(model: Any) -> Iterator[Any]:
    # Keras has no public recursive walk: `layers` lists a model's direct children only (and a plain Layer has
    # none), while nested models and a subclassed model's attributes hold more; every Layer has _flatten_layers.
    yield from model._flatten_layers(include_self=True, recursive=True)


def _layouts(keras: Any, layer: Any) -> Iterator[tuple[Any, Layout]]:
    if not layer.built:  # no variables yet
        return
    layers = keras.layers
    conv = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
    transposed = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
    depthwise = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
    separable = (layers.SeparableConv1D, layers.SeparableConv2D)
    if isinstance(layer, conv):
        yield layer.kernel, lambda r: conv_record(r.name, from_spatial_first(r.array), r.dtype, layer.groups)
    elif isinstance(layer, transposed):
        yield layer.kernel, lambda r: r._replace(array=from_spatial_first(r.array, out_last=False))
    elif isinstance(layer, depthwise):
        yield layer.kernel, _depthwise
    elif isinstance(layer, separable):
        yield layer.depthwise_kernel, _depthwise
        yield layer.pointwise_kernel, lambda r: r._replace(array=from_spatial_first(r.array))
    elif isinstance(layer, layers.EinsumDense):
        yield layer.kernel, lambda r: _einsum_matrix(r, layer.equation)
        if layer.bias is not None:  # shaped like the output's trailing axes, (heads, head_dim): still a bias
            yield layer.bias, lambda r: r._replace(array=r.array.reshape(-1))


def _depthwise(record: NamedTensor) -> NamedTensor | SkippedTensor:
    """(*spatial, in, multiplier): a grouped convolution of `in` groups, one input channel each."""
    kernel = from_spatial_first(record.array, out_last=True)  # (multiplier, in, *spatial)
    multiplier, n_in, *spatial = kernel.shape
    by_channel = kernel.swapaxes(0, 1).reshape(n_in * multiplier, 1, *spatial)
    return conv_record(record.name, by_channel, record.dtype, groups=n_in)


def _einsum_matrix(record: NamedTensor, equation: str) -> NamedTensor:
    """The kernel of `x,kernel->y` as one (contracted axes, output axes) matrix; as it is when an axis is both
    (a batch axis: several matrices, which this does not split)."""
    inputs, rest = equation.replace(" ", "").split(",", 1)
    spec, output = rest.split("->")
    contracted = [i for i, a in enumerate(spec) if a in inputs and a not in output]
    produced = [i for i, a in enumerate(spec) if a in output and a not in inputs]
    if len(contracted) + len(produced) != record.array.ndim:
        return record
    n_in = math.prod(record.array.shape[i] for i in contracted)
    return record._replace(array=record.array.transpose(*contracted, *produced).reshape(n_in, -1))
