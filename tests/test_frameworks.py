"""Models in memory (hteval.frameworks, docs/frameworks.md): each framework's own names, conv layouts read from
its layer types, grouped and transposed convolutions as their operators' matrices, tied weights once, meta and
quantized tensors, and the rule that torch is imported only for torch objects.

Reference spectra come from the same weights converted by hand to torch's (out, in, *spatial) layout and, for
the conv layouts, from the frameworks themselves: a layer applied to unit inputs gives, column by column, the
matrix from its input channels to its output channels at each kernel position.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hteval.errors import InputError  # noqa: E402
from hteval.frameworks import named_tensors, source_label  # noqa: E402
from hteval.network_analysis import analyze  # noqa: E402
from hteval.spectra import LayerSpectrum, SkippedLayer, iter_spectra, load_spectra, spectrum  # noqa: E402

RTOL = 1e-12


def by_name(results):
    return {r.name: r for r in results}


def assert_same_spectrum(got: LayerSpectrum, want: LayerSpectrum):
    assert (got.shape, got.N, got.M, got.n_slices, got.n_censored) == (want.shape, want.N, want.M, want.n_slices,
                                                                      want.n_censored)
    np.testing.assert_allclose(got.eigenvalues, want.eigenvalues, rtol=RTOL, atol=0)


def stack_groups(kernel, groups):
    """Torch layout (out, in/groups, *k) -> (out/groups, in/groups, groups, *k), written out group by group."""
    per_out = kernel.shape[0] // groups
    return np.stack([kernel[j * per_out:(j + 1) * per_out] for j in range(groups)], axis=2)


def operator_eigenvalues(matrices, n):
    """Sorted squared singular values / n of every matrix in the (positions, out, in) stack."""
    singular = np.concatenate([np.linalg.svd(m.astype(np.float64), compute_uv=False) for m in matrices])
    return np.sort(singular**2 / n)


def assert_operator(layer: LayerSpectrum, matrices):
    """The layer's pooled spectrum is that of the operator's matrices (block-diagonal ones for grouped convs:
    the union of the blocks' spectra, each scaled by the block's N)."""
    assert layer.n_censored == 0
    np.testing.assert_allclose(layer.eigenvalues, operator_eigenvalues(matrices, layer.N), rtol=1e-9)


# ----------------------------------------------------------------------------------------------------------- torch

def _torch_convs():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.Conv2d(6, 20, 3), torch.nn.Conv2d(8, 24, 3, groups=2),
                               torch.nn.ConvTranspose2d(8, 24, 3, groups=2), torch.nn.Conv2d(8, 8, 3, groups=8))


def test_torch_module_reads_like_its_safetensors_file(tmp_path):
    """Names and order are the state_dict's, names the file's; where the file's layout is the layer's (Linear,
    ungrouped Conv) the spectra are the file's; grouped and transposed convs are its arrays rearranged by hand."""
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    model = _torch_convs()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), path)
    from_model = by_name(iter_spectra(model))
    from_file = by_name(iter_spectra(path))
    assert list(from_model) == list(model.state_dict())
    assert sorted(from_model) == sorted(from_file)  # safetensors stores its tensors sorted
    for name in ("0.weight", "1.weight"):
        assert_same_spectrum(from_model[name], from_file[name])

    stored = load_file(path)
    grouped = stack_groups(stored["2.weight"], 2)
    transposed = np.concatenate([stored["3.weight"][4 * j:4 * (j + 1)].swapaxes(0, 1) for j in range(2)])
    assert_same_spectrum(from_model["2.weight"], spectrum(grouped, "2.weight"))
    assert_same_spectrum(from_model["3.weight"], spectrum(stack_groups(transposed, 2), "3.weight"))
    assert from_model["2.weight"].shape == (12, 4, 2, 3, 3)
    depthwise = from_model["4.weight"]
    assert isinstance(depthwise, SkippedLayer) and "depthwise convolution of 8 groups" in depthwise.reason


def test_torch_grouped_and_transposed_convs_are_their_operators():
    """Unit inputs through torch's own conv and conv_transpose give each kernel position's out x in matrix."""
    model = _torch_convs()
    layers = by_name(load_spectra(model))
    conv, transposed = model[2], model[3]
    with torch.no_grad():
        units = torch.eye(8 * 9).reshape(8 * 9, 8, 3, 3)  # one input channel at one kernel position each
        response = torch.nn.functional.conv2d(units, conv.weight, groups=2).reshape(8, 9, 24).numpy()
        assert_operator(layers["2.weight"], response.transpose(1, 2, 0))
        response = torch.nn.functional.conv_transpose2d(torch.eye(8).reshape(8, 8, 1, 1), transposed.weight, groups=2)
        assert_operator(layers["3.weight"], response.reshape(8, 24, 9).numpy().transpose(2, 1, 0))


def test_hugging_face_model_names_fused_projection_and_tied_head():
    """GPT-2: state_dict names; c_attn (a Conv1D storing q, k and v side by side) one 64 x 192 matrix; the lm_head
    tied to the input embedding analysed once, listed as skipped, from the model and from its state_dict."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=100, n_positions=32,
                                     tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    for source in (model, model.state_dict()):
        rows = by_name(iter_spectra(source))
        assert list(rows) == list(model.state_dict())
        c_attn = rows["transformer.h.0.attn.c_attn.weight"]
        assert (c_attn.shape, c_attn.N, c_attn.M, c_attn.n_slices) == ((64, 192), 192, 64, 1)
        head = rows["lm_head.weight"]
        assert isinstance(head, SkippedLayer) and head.reason == "tied to transformer.wte.weight"
        assert isinstance(rows["transformer.wte.weight"], LayerSpectrum)
    assert source_label(model) == "<GPT2LMHeadModel>"


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_meta_tensors_skipped_and_quantized_dequantized():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.Linear(32, 24, device="meta"))
    rows = by_name(iter_spectra(model))
    assert isinstance(rows["0.weight"], LayerSpectrum)
    assert isinstance(rows["1.weight"], SkippedLayer) and "meta device" in rows["1.weight"].reason
    assert rows["1.weight"].shape == (24, 32)

    weights = torch.randn(40, 30)
    quantized = torch.quantize_per_tensor(weights, 0.05, 0, torch.qint8)
    (layer,) = load_spectra({"q": quantized})
    assert_same_spectrum(layer, spectrum(quantized.dequantize().numpy(), "q"))
    assert np.abs(layer.eigenvalues - spectrum(weights.numpy()).eigenvalues).max() > 0  # the stored values, rounded

    linear = torch.ao.nn.quantized.Linear(32, 24)  # keeps (weight, bias) packed in one state_dict entry
    linear.set_weight_bias(torch.quantize_per_tensor(torch.randn(24, 32), 0.05, 0, torch.qint8), None)
    layers = by_name(load_spectra(torch.nn.Sequential(linear)))
    assert_same_spectrum(layers["0.weight"], spectrum(linear.weight().dequantize().numpy()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_module_on_a_gpu_is_read_where_it_is():
    model = _torch_convs()
    on_host = by_name(load_spectra(model))
    model.cuda()
    on_device = by_name(load_spectra(model))
    assert next(model.parameters()).is_cuda
    assert list(on_device) == list(on_host)
    for name, layer in on_host.items():
        assert_same_spectrum(on_device[name], layer)


# ------------------------------------------------------------------------------------------------------------- JAX

def test_flax_linen_params_dict():
    """A bare params dict: leaves named kernel are flax's (*k, in, out), Conv and ConvTranspose alike."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.ConvTranspose(12, (3, 3))(nn.Conv(20, (3, 3))(x))
            return nn.Dense(24)(x.reshape(x.shape[0], -1))

    variables = Net().init(jax.random.key(0), jnp.ones((1, 4, 4, 6)))
    layers = by_name(load_spectra(variables))
    assert list(layers) == ["params.Conv_0.kernel", "params.ConvTranspose_0.kernel", "params.Dense_0.kernel"]
    params = jax.device_get(variables["params"])
    for name in ("Conv_0", "ConvTranspose_0"):
        hand = params[name]["kernel"].transpose(3, 2, 0, 1)
        assert_same_spectrum(layers[f"params.{name}.kernel"], spectrum(hand))
    assert_same_spectrum(layers["params.Dense_0.kernel"], spectrum(params["Dense_0"]["kernel"]))


def test_flax_nnx_module():
    """Conv (grouped too), both ConvTranspose layouts, LinearGeneral as one matrix, a shared Variable once."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(8, 24, (3, 3), feature_group_count=2, rngs=rngs)
            self.up = nnx.ConvTranspose(8, 20, (3, 3), padding="VALID", rngs=rngs)
            self.up_t = nnx.ConvTranspose(8, 20, (3, 3), padding="VALID", transpose_kernel=True, rngs=rngs)
            self.query = nnx.LinearGeneral(32, (2, 16), rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(32, 32, rngs=rngs)])
            self.head = nnx.Linear(32, 32, rngs=rngs)
            self.head.kernel = self.blocks[0].kernel
            self.rngs = rngs

    net = Net(nnx.Rngs(0))
    rows = by_name(iter_spectra(net))
    assert [n for n, r in rows.items() if isinstance(r, LayerSpectrum)] == [
        "blocks.0.kernel", "conv.kernel", "query.kernel", "up.kernel", "up_t.kernel"]  # nnx.state's order
    assert rows["head.kernel"].reason == "tied to blocks.0.kernel"
    assert not any(name.startswith("rngs") for name in rows)
    kernel = np.asarray(net.conv.kernel.get_value())
    assert_same_spectrum(rows["conv.kernel"], spectrum(stack_groups(kernel.transpose(3, 2, 0, 1), 2)))
    assert_same_spectrum(rows["up.kernel"], spectrum(np.asarray(net.up.kernel.get_value()).transpose(3, 2, 0, 1)))
    assert_same_spectrum(rows["up_t.kernel"], spectrum(np.asarray(net.up_t.kernel.get_value()).transpose(2, 3, 0, 1)))
    assert_same_spectrum(rows["query.kernel"], spectrum(np.asarray(net.query.kernel.get_value()).reshape(32, 32)))
    assert rows["query.bias"].reason.startswith("1-D")
    for layer in (net.up, net.up_t):  # the framework's own operator: unit inputs of one pixel
        response = np.asarray(layer(np.eye(8, dtype=np.float32).reshape(8, 1, 1, 8)) - layer.bias.get_value())
        assert_operator(rows["up.kernel" if layer is net.up else "up_t.kernel"],
                        response.reshape(8, 9, 20).transpose(1, 2, 0))


def test_equinox_module():
    """equinox keeps torch's layout, transposed convs included; the same array twice is read once."""
    import equinox as eqx
    import jax

    keys = jax.random.split(jax.random.key(0), 4)

    class Net(eqx.Module):
        layers: list
        head: jax.Array

        def __init__(self):
            self.layers = [eqx.nn.Conv2d(8, 24, 3, groups=2, key=keys[0]),
                           eqx.nn.ConvTranspose2d(8, 20, 3, key=keys[1]), eqx.nn.Linear(40, 30, key=keys[2])]
            self.head = self.layers[2].weight

    net = Net()
    rows = by_name(iter_spectra(net))
    assert [n for n, r in rows.items() if isinstance(r, LayerSpectrum)] == [
        "layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert rows["head"].reason == "tied to layers.2.weight"
    assert rows["layers.0.bias"].reason.startswith("1-D")  # stored (out, 1, 1) for broadcasting
    weights = [np.asarray(layer.weight) for layer in net.layers]
    assert_same_spectrum(rows["layers.0.weight"], spectrum(stack_groups(weights[0], 2)))
    assert_same_spectrum(rows["layers.1.weight"], spectrum(weights[1]))
    assert_same_spectrum(rows["layers.2.weight"], spectrum(weights[2]))
    transposed = net.layers[1]
    units = np.eye(8, dtype=transposed.weight.dtype).reshape(8, 8, 1, 1)
    response = jax.vmap(transposed)(units) - transposed.bias
    assert_operator(rows["layers.1.weight"], np.asarray(response).reshape(8, 20, 9).transpose(2, 1, 0))


# ----------------------------------------------------------------------------------------------------------- Keras

@pytest.fixture(scope="module")
def keras():
    os.environ["KERAS_BACKEND"] = "jax"  # before the first import: Keras picks its backend once
    return pytest.importorskip("keras")


def _keras_model(keras):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 8))
    x = keras.layers.Conv2D(24, 3, groups=2, padding="same", name="conv")(inputs)
    x = keras.layers.Conv2DTranspose(20, 3, name="up")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Reshape((16, 20))(x)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16, name="attention")(x, x)
    return keras.Model(inputs, keras.layers.Dense(24, name="dense")(x), name="net")


def test_keras_model(keras):
    """Conv HWIO (grouped), ConvTranspose (*k, out, in), depthwise skipped, EinsumDense as one matrix."""
    model = _keras_model(keras)
    rows = by_name(iter_spectra(model))
    assert list(rows) == [v.path for v in model.weights]
    assert "depthwise convolution of 20 groups" in rows["depthwise/kernel"].reason
    kernels = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.weights}
    assert_same_spectrum(rows["conv/kernel"], spectrum(stack_groups(kernels["conv/kernel"].transpose(3, 2, 0, 1), 2)))
    assert_same_spectrum(rows["up/kernel"], spectrum(kernels["up/kernel"].transpose(2, 3, 0, 1)))
    assert_same_spectrum(rows["attention/query/kernel"], spectrum(kernels["attention/query/kernel"].reshape(20, 32)))
    assert_same_spectrum(rows["attention/attention_output/kernel"],
                         spectrum(kernels["attention/attention_output/kernel"].reshape(32, 20)))
    assert rows["attention/query/bias"].reason.startswith("1-D")
    assert_same_spectrum(rows["dense/kernel"], spectrum(kernels["dense/kernel"]))
    up = model.get_layer("up")
    response = keras.ops.convert_to_numpy(up(np.eye(24, dtype=np.float32).reshape(24, 1, 1, 24))) - kernels["up/bias"]
    assert_operator(rows["up/kernel"], response.reshape(24, 9, 20).transpose(1, 2, 0))
    assert source_label(model) == "<Functional 'net'>"


# ------------------------------------------------------------------------------------------- dispatch, end to end

def test_an_unreadable_object_is_one_clear_error():
    with pytest.raises(InputError, match=r"builtins\.object; hteval reads .*torch nn\.Module.*Keras 3 model"):
        named_tensors(object())
    with pytest.raises(InputError, match="no arrays among the leaves of a list"):
        list(named_tensors(["not", "arrays"]))


def test_arrays_and_flax_params_do_not_import_torch(tmp_path):
    """Objects of other frameworks are recognised without importing torch (or Keras, transformers)."""
    code = textwrap.dedent(f"""
        import sys
        import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
        from hteval.network_analysis import analyze
        from hteval.spectra import load_spectra
        params = nn.Dense(20).init(jax.random.key(0), jnp.ones((1, 30)))
        assert [s.name for s in load_spectra(params)] == ["params.kernel"]
        rng = np.random.default_rng(0)
        table = analyze({{"a": {{"w": rng.standard_normal((40, 30))}}}}, {str(tmp_path)!r}, figures=False,
                        report=False)
        assert list(table["status"]) == ["ok"], table
        print(sorted(m for m in ("torch", "keras", "transformers", "equinox") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HTEVAL_CACHE": "off"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_analyze_a_torch_and_a_keras_model(tmp_path, keras):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.Conv2d(8, 24, 3, groups=2))
    table = analyze(model, tmp_path / "torch", figures=False)
    assert table.set_index("name")["status"].to_dict() == {"0.weight": "ok", "0.bias": "skipped",
                                                            "1.weight": "ok", "1.bias": "skipped"}
    table = analyze(_keras_model(keras), tmp_path / "keras", figures=False)
    status = table.set_index("name")["status"]
    assert (status[["conv/kernel", "up/kernel", "attention/query/kernel", "dense/kernel"]] == "ok").all()
    assert status["depthwise/kernel"] == "skipped"
    assert "# hteval analyze: <Functional 'net'>" in (tmp_path / "keras" / "report.md").read_text()
