"""Checkpoint readers against damaged and hostile files: property-based (hypothesis), every case in-process.

Inputs are small valid checkpoints of every format (made once per module) with bytes flipped, overwritten or cut,
and files built with broken headers, members and pickles. Each case is read twice: through
`iter_spectra(on_error="skip")`, and through `iter_tensors` with every array read in full. Either read ends in one
of three ways: success (arrays of their declared shape, which the file's bytes can hold), per-layer errors
(SkippedLayer records with status 'error'; an UnreadableArray whose reading raises InputError), or one InputError.
Never another exception, a hang (each read has 5 s) or a memory blow-up: the peak traced allocation (numpy reports
its buffers to tracemalloc) and the peak resident memory (VmHWM, reset before each read) stay under 8 times the
file's size plus 64 MB. A sample of cases also goes through the command line (`hteval esd PATH`): exit 0; exit 2
with one line "hteval: error: ..."; or exit 3 with one line counting the failed layers; never a traceback.

The default run makes 500+ cases (hypothesis with derandomize=True, so CI is deterministic); `-m slow` makes
10,000+.
"""

import ast
import contextlib
import io
import json
import math
import os
import pickle
import pickletools
import re
import signal
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from collections import Counter, OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from checkpoint_files import safetensors_bytes
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hteval.cli import main
from hteval.errors import InputError
from hteval.io import iter_tensors
from hteval.io.base import NamedTensor, SkippedTensor, UnreadableArray
from hteval.spectra import LayerSpectrum, SkippedLayer, iter_spectra

try:
    import torch
except ImportError:  # an optional dependency: without it, the torch cases are skipped
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

SECONDS = 5.0
BOUND_FACTOR, BOUND_EXTRA = 8, 64 << 20
#: cases per property test: (default run, slow run); the sums are 500+ and 10,000+
BUDGETS = {"safetensors_bytes": (50, 1000), "safetensors_header": (60, 1200), "shards": (40, 800),
           "npy_bytes": (40, 800), "npy_header": (50, 1000), "npz_bytes": (50, 1000), "npz_members": (50, 1000),
           "torch_zip_bytes": (50, 1000), "torch_zip_members": (60, 1300), "torch_legacy_bytes": (50, 1000)}
CLI_EVERY = 10  # one case in CLI_EVERY also runs `hteval esd PATH`
OUTCOMES: dict[str, Counter] = {}
PEAKS: dict[str, dict[str, float]] = {}


def _budget(test: str) -> list:
    ci, slow = BUDGETS[test]
    return [pytest.param(ci, id="ci"), pytest.param(slow, id="slow", marks=pytest.mark.slow)]


# Valid checkpoints ------------------------------------------------------------------------------------------------

_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _gaussian(*shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.dtype(dtype))


def _safetensors_bytes(tensors) -> bytes:
    return safetensors_bytes(tensors, metadata={"format": "pt"})


def _torch_state():
    weight = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    inner = OrderedDict([("w", torch.randn(16, 20, generator=torch.Generator().manual_seed(1)).half())])
    state = OrderedDict([("layer.weight", weight), ("layer.bias", torch.zeros(16)),
                         ("emb.weight", torch.randn(20, 16, generator=torch.Generator().manual_seed(2)).bfloat16()),
                         ("tied.weight", weight), ("step", torch.tensor(3)), ("inner", inner)])
    return {"state_dict": state, "epoch": 3}


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """One small valid checkpoint of each kind: name -> path (a file, or the shard directory)."""
    root = tmp_path_factory.mktemp("valid")
    files = {"safetensors": root / "model.safetensors", "npy": root / "w.npy", "npz": root / "m.npz",
             "npz-compressed": root / "c.npz", "torch-zip": root / "model.pt", "torch-legacy": root / "legacy.bin",
             "shards": root / "shards"}
    files["safetensors"].write_bytes(_safetensors_bytes([
        ("layer.weight", _gaussian(32, 16)), ("layer.bias", _gaussian(16, seed=1)),
        ("emb.weight", _gaussian(24, 16, dtype="float16", seed=2)),
        ("bf.weight", _gaussian(16, 16, dtype="bfloat16", seed=3)), ("ids", np.arange(4, dtype=np.int64)),
        ("mask", np.ones((2, 3), dtype=bool))]))
    np.save(files["npy"], _gaussian(32, 16))
    members = {"a": _gaussian(32, 16), "b": _gaussian(16, dtype="float64", seed=1),
               "c": np.arange(9, dtype=np.int32).reshape(3, 3), "f": np.asfortranarray(_gaussian(20, 16, seed=2))}
    np.savez(files["npz"], **members)
    np.savez_compressed(files["npz-compressed"], **members)
    if torch is not None:
        torch.save(_torch_state(), files["torch-zip"])
        torch.save(_torch_state(), files["torch-legacy"], _use_new_zipfile_serialization=False)
    shards = files["shards"]
    shards.mkdir()
    (shards / "model-00001-of-00002.safetensors").write_bytes(_safetensors_bytes([
        ("a.weight", _gaussian(32, 16)), ("a.bias", _gaussian(16, seed=1))]))
    (shards / "model-00002-of-00002.safetensors").write_bytes(_safetensors_bytes([
        ("b.weight", _gaussian(20, 16, dtype="float16", seed=2))]))
    weight_map = {"b.weight": "model-00002-of-00002.safetensors", "a.weight": "model-00001-of-00002.safetensors",
                  "a.bias": "model-00001-of-00002.safetensors"}
    (shards / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for path in files.values():  # the valid files read, and the first read's imports are paid, before measuring
        if not path.exists():
            continue
        assert list(iter_spectra(path, on_error="skip"))
        _read_every_array(path)
    return files


# The checks of one case -------------------------------------------------------------------------------------------

class _Overtime(BaseException):
    """Raised in the reader by the CPU timer of a case that runs too long (a BaseException, so no reader's
    `except` catches it)."""


def _on_timer(signum, frame):
    raise _Overtime


def _resident_peak_reset() -> int | None:
    """Reset the process's peak resident memory (Linux: /proc/self/clear_refs); its current size, None where the
    reset is not available."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M).group(1)) * 1024


@contextlib.contextmanager
def _limits(label: str, size: int):
    """Run a read under the time limit; afterwards check time and peak memory against the bounds."""
    bound = BOUND_FACTOR * size + BOUND_EXTRA
    tracemalloc.reset_peak()
    traced_before = tracemalloc.get_traced_memory()[0]
    resident_before = _resident_peak_reset()
    previous = signal.signal(signal.SIGPROF, _on_timer)
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_PROF, SECONDS)
    try:
        yield
    except _Overtime:
        pytest.fail(f"{label}: reading took more than {SECONDS} s of CPU time")
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] - traced_before
    resident = _status_kb("VmHWM") - resident_before if resident_before is not None else 0
    peaks = PEAKS.setdefault(label, {"seconds": 0.0, "traced": 0, "resident": 0, "ratio": 0.0})
    for key, value in (("seconds", seconds), ("traced", traced), ("resident", resident),
                       ("ratio", max(traced, resident) / bound)):
        peaks[key] = max(peaks[key], value)
    assert seconds < SECONDS, f"{label}: {seconds:.1f} s"
    assert traced < bound, f"{label}: {traced} bytes allocated for a file of {size}"
    assert resident < bound, f"{label}: resident memory grew by {resident} bytes for a file of {size}"


@pytest.fixture(scope="module", autouse=True)
def _traced():
    """numpy reports its buffers to tracemalloc: trace allocations for the module's cases."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def _read_every_array(path: Path) -> tuple[str, list]:
    """iter_tensors, every array read in full: ('ok' or 'layer-errors', shapes) or ('input-error', [])."""
    shapes, failed = [], 0
    try:
        for tensor in iter_tensors(path):
            if isinstance(tensor, SkippedTensor):
                continue
            assert isinstance(tensor, NamedTensor) and isinstance(tensor.name, str) and isinstance(tensor.dtype, str)
            tensor.name.encode("utf-8")  # every name can be printed
            if isinstance(tensor.array, UnreadableArray):
                with pytest.raises(InputError) as info:
                    np.asarray(tensor.array)
                assert info.value.layer == tensor.name
                failed += 1
                continue
            _check_array(tensor.array, _size(path))
            shapes.append((tensor.name, tensor.array.shape))
    except InputError as err:
        assert str(err) and "\n" not in " ".join(str(err).split())
        return "input-error", []
    return ("layer-errors" if failed else "ok"), shapes


def _check_array(array: np.ndarray, size: int) -> None:
    """A readable array: numpy, of a finite shape whose bytes the file holds, and read to its last element."""
    assert isinstance(array, np.ndarray)
    assert all(type(n) is int and n >= 0 for n in array.shape)
    assert array.nbytes <= size, f"an array of {array.nbytes} bytes from a file of {size}"
    with np.errstate(all="ignore"):
        values = np.asarray(array)
        if values.dtype.kind in "biufc":
            values.sum()
        else:  # bfloat16 and float8 (ml_dtypes) sum in float32
            values.astype(np.float32).sum()


def _read_spectra(path: Path) -> tuple[str, list]:
    try:
        results = list(iter_spectra(path, on_error="skip"))
    except InputError as err:
        assert str(err)
        return "input-error", []
    assert all(isinstance(r, (LayerSpectrum, SkippedLayer)) for r in results)
    for result in results:
        result.name.encode("utf-8")
        if isinstance(result, LayerSpectrum):
            assert np.isfinite(result.eigenvalues).all() and result.n_eigs + result.n_censored > 0
    errors = [r for r in results if isinstance(r, SkippedLayer) and r.status == "error"]
    return ("layer-errors" if errors else "ok"), results


def _check_cli(path: Path) -> None:
    """`hteval esd PATH`, writing to strict UTF-8 streams as a terminal or pipe does (a name that cannot be encoded
    would fail there, not in a StringIO)."""
    stdout, stderr = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["esd", str(path)])
    for stream in (stdout, stderr):
        stream.flush()
    err = stderr.buffer.getvalue().decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if status == 2:  # an InputError
        assert len(lines) == 1 and lines[0].startswith("hteval: error:"), err
    elif status == 3:  # layers with status error, listed in the output and counted on stderr
        assert len(lines) == 1 and lines[0].startswith("hteval: ") and "failed" in lines[0], err
    else:
        assert status == 0, (status, err)


def _fingerprint(path: Path) -> int:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return zlib.crc32(b"".join(p.name.encode() + p.read_bytes() for p in files if p.is_file()))


def check_case(label: str, path: Path) -> None:
    """Read one damaged checkpoint both ways under the limits, and tally how it ended."""
    size = _size(path)
    with _limits(label, size):
        spectra, _ = _read_spectra(path)
    with _limits(label, size):
        tensors, _ = _read_every_array(path)
    counts = OUTCOMES.setdefault(label, Counter())
    counts[f"spectra:{spectra}"] += 1
    counts[f"tensors:{tensors}"] += 1
    counts["cases"] += 1
    if _fingerprint(path) % CLI_EVERY == 0:  # chosen by content, so that hypothesis can replay a case
        _check_cli(path)


@pytest.fixture(scope="module", autouse=True)
def _report():
    """Print what the cases ended in and the peaks they reached (shown with pytest -s)."""
    yield
    for label, counts in sorted(OUTCOMES.items()):
        peaks = PEAKS.get(label, {})
        print(f"\n{label}: {dict(counts)}; peaks: {peaks.get('seconds', 0):.3f} s, "
              f"traced {peaks.get('traced', 0) / 2**20:.2f} MiB, resident {peaks.get('resident', 0) / 2**20:.2f} MiB,"
              f" {peaks.get('ratio', 0):.4f} of the bound")


def explore(strategy, examples: int, check) -> None:
    """Run `check` on `examples` cases drawn from `strategy`, deterministically."""
    ran = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                     HealthCheck.filter_too_much])
    @given(strategy)
    def run(case):
        ran.append(1)
        check(case)

    run()
    assert len(ran) >= examples


# Byte damage ------------------------------------------------------------------------------------------------------

_INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, ord("9"), ord('"'), ord("-"), ord("["), ord("{"), ord(",")]


def byte_edits(size: int, focus: list[tuple[int, int]]):
    """Lists of 1-4 edits of a file of `size` bytes: bit flips, overwrites with interesting bytes, truncations;
    half of the positions inside the `focus` ranges (headers, pickles, zip directories)."""
    ranges = [st.integers(0, size - 1)] + [st.integers(lo, max(lo, hi - 1)) for lo, hi in focus if hi > lo]
    position = st.one_of(*ranges)
    flip = st.tuples(st.just("xor"), position, st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 255]))
    put = st.tuples(st.just("set"), position, st.sampled_from(_INTERESTING))
    cut = st.tuples(st.just("cut"), st.integers(0, size), st.just(0))
    return st.lists(st.one_of(flip, flip, put, cut), min_size=1, max_size=4)


def apply_edits(raw: bytes, edits) -> bytes:
    data = bytearray(raw)
    for kind, at, value in edits:
        if kind == "cut":
            del data[at:]
        elif at < len(data):
            data[at] = data[at] ^ value if kind == "xor" else value
    return bytes(data)


def _header_end(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


@pytest.mark.parametrize("examples", _budget("safetensors_bytes"))
def test_safetensors_byte_damage(valid, tmp_path, examples):
    """Also under a misleading suffix (.pt) and none at all: the format is then told from the first bytes."""
    raw = valid["safetensors"].read_bytes()

    def check(case):
        name, edits = case
        path = tmp_path / name
        path.write_bytes(apply_edits(raw, edits))
        check_case("safetensors bytes", path)

    names = st.sampled_from(["model.safetensors", "model.safetensors", "model.pt", "model"])
    explore(st.tuples(names, byte_edits(len(raw), [(0, _header_end(raw))])), examples, check)


@pytest.mark.parametrize("examples", _budget("npy_bytes"))
def test_npy_byte_damage(valid, tmp_path, examples):
    raw = valid["npy"].read_bytes()
    path = tmp_path / "w.npy"

    def check(edits):
        path.write_bytes(apply_edits(raw, edits))
        check_case("npy bytes", path)

    explore(byte_edits(len(raw), [(0, 128)]), examples, check)


@pytest.mark.parametrize("examples", _budget("npz_bytes"))
def test_npz_byte_damage(valid, tmp_path, examples):
    """Stored and deflated archives: local headers, member headers and data, the central directory."""
    raws = {kind: valid[kind].read_bytes() for kind in ("npz", "npz-compressed")}
    names = st.sampled_from(["m.npz", "m.npz", "m.weights"])  # an unknown suffix: told apart by member names

    def edits(kind):
        raw = raws[kind]
        return st.tuples(st.just(kind), names, byte_edits(len(raw), [(0, 200), (len(raw) - 400, len(raw))]))

    def check(case):
        kind, name, edit = case
        path = tmp_path / name
        path.write_bytes(apply_edits(raws[kind], edit))
        check_case("npz bytes", path)

    explore(st.one_of(edits("npz"), edits("npz-compressed")), examples, check)


def _zip_member_span(raw: bytes, name: str) -> tuple[int, int]:
    info = zipfile.ZipFile(io.BytesIO(raw)).getinfo(name)
    n, e = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + n + e
    return start, start + info.compress_size


@needs_torch
@pytest.mark.parametrize("examples", _budget("torch_zip_bytes"))
def test_torch_zip_byte_damage(valid, tmp_path, examples):
    raw = valid["torch-zip"].read_bytes()
    pickle_span = _zip_member_span(raw, "model/data.pkl")

    def check(case):
        name, edits = case
        path = tmp_path / name
        path.write_bytes(apply_edits(raw, edits))
        check_case("torch zip bytes", path)

    names = st.sampled_from(["model.pt", "model.pt", "model.weights"])
    explore(st.tuples(names, byte_edits(len(raw), [pickle_span, (len(raw) - 1200, len(raw))])), examples, check)


def _pickle_ends(raw: bytes, count: int = 5) -> list[int]:
    """Where each of the first `count` pickles of a legacy torch file ends (five pickles, then the data)."""
    stream, ends = io.BytesIO(raw), []
    for _ in range(count):
        for _ in pickletools.genops(stream):
            pass
        ends.append(stream.tell())
    return ends


@needs_torch
@pytest.mark.parametrize("examples", _budget("torch_legacy_bytes"))
def test_torch_legacy_byte_damage(valid, tmp_path, examples):
    raw = valid["torch-legacy"].read_bytes()
    end = _pickle_ends(raw)[-1]

    def check(case):
        name, edits = case
        path = tmp_path / name
        path.write_bytes(apply_edits(raw, edits))
        check_case("torch legacy bytes", path)

    names = st.sampled_from(["legacy.bin", "legacy.bin", "legacy.weights"])
    explore(st.tuples(names, byte_edits(len(raw), [(0, end), (end, end + 64)])), examples, check)


# Safetensors headers and shard directories ------------------------------------------------------------------------

_ODD_DTYPES = ["F4", "F8_E8M0", "f32", "", "BF16 ", "I4", "STR", "F32\u0000"]
_BAD_SHAPES = [[-1, 16], [10**6, 10**6], [2**63, 2], [2**64 + 1], ["3"], [1.5], [True, 4], "32x16", None, {},
               [[2, 2]], [0, 10**12]]
_BAD_OFFSETS = [None, "0,4", [0], [0, 1, 2], [0.0, 4.0], [True, False], [-4, 4], [0, 4 * 10**12], [0, 2**64],
                [2**70, 2**70 + 4], {"begin": 0}]
_NAMES = st.one_of(st.sampled_from(["w", "layer.weight", "w", "__metadata__", "", "a\nb"]),
                   st.text(st.characters(codec="utf-8"), max_size=6),
                   st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2))  # lone surrogates


@st.composite
def safetensors_files(draw):
    """A safetensors file built from a drawn header: known, unknown and non-string dtypes; good and bad shapes; byte
    ranges that fit, overlap, run backwards or past the end; duplicate, empty and surrogate names; headers that
    are not UTF-8, not JSON, nested too deep, with 5000-digit numbers; a wrong length field; too few data bytes."""
    entries, offset = [], 0
    for _ in range(draw(st.integers(0, 4))):
        dtype = draw(st.one_of(st.sampled_from(list(_ST_ITEMSIZE)), st.sampled_from(_ODD_DTYPES),
                               st.integers(-2, 2), st.none()))
        shape = draw(st.one_of(st.lists(st.integers(0, 40), max_size=3), st.lists(st.integers(0, 40), max_size=3),
                               st.sampled_from(_BAD_SHAPES)))
        good_shape = isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
        nbytes = math.prod(shape) * _ST_ITEMSIZE.get(dtype, 4) if good_shape else 8
        offsets = draw(st.one_of(st.just([offset, offset + nbytes]), st.just([offset, offset + nbytes]),
                                 st.lists(st.integers(-8, 5000), min_size=2, max_size=2),
                                 st.sampled_from(_BAD_OFFSETS)))
        spec = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        for key in draw(st.lists(st.sampled_from(list(spec)), max_size=1)):
            del spec[key]
        entries.append((draw(_NAMES), draw(st.one_of(st.just(spec), st.just(spec), st.sampled_from([[], 3, "x"])))))
        offset += nbytes if good_shape and nbytes < 1 << 20 else 0
    if draw(st.booleans()):
        entries.insert(0, ("__metadata__", draw(st.sampled_from([{"format": "pt"}, [1, 2], "x", {"a": 1}]))))
    text = "{" + ", ".join(f"{json.dumps(name)}: {json.dumps(spec)}" for name, spec in entries) + "}"
    mode = draw(st.sampled_from(["plain"] * 6 + ["not-utf8", "nested", "bignum", "array", "garbage", "empty"]))
    header = {"plain": text.encode(), "not-utf8": text.encode().replace(b'"', b'"\xff\xfe', 1),
              "nested": b"[" * 5_000 + b"]" * 5_000, "bignum": text.replace("0", "1" * 5000, 1).encode(),
              "array": b"[1, 2, 3]", "garbage": draw(st.binary(max_size=64)), "empty": b""}[mode]
    header += b" " * draw(st.sampled_from([0, -len(header) % 8]))
    length = draw(st.one_of(st.just(len(header)), st.just(len(header)), st.integers(0, 2**64 - 1),
                            st.sampled_from([len(header) + 1, max(len(header) - 1, 0), 2**63, 100_000_001])))
    data_size = draw(st.one_of(st.just(offset), st.just(offset), st.integers(0, offset + 64)))
    data = (np.arange(data_size, dtype=np.uint8) * 37 % 251).tobytes()  # finite for every float dtype
    return length.to_bytes(8, "little") + header + data


@pytest.mark.parametrize("examples", _budget("safetensors_header"))
def test_safetensors_header_edits(tmp_path, examples):
    path = tmp_path / "model.safetensors"

    def check(raw):
        path.write_bytes(raw)
        check_case("safetensors header", path)

    explore(safetensors_files(), examples, check)


@pytest.mark.parametrize("examples", _budget("shards"))
def test_shard_directory_damage(valid, tmp_path, examples):
    """One file of a sharded checkpoint damaged, a shard removed, or the index rewritten: weight maps of the wrong
    type, shards named with directories or absent, tensors their shard lacks."""
    originals = {p.name: p.read_bytes() for p in valid["shards"].iterdir()}
    names = sorted(originals)
    weight_maps = st.one_of(
        st.dictionaries(st.sampled_from(["a.weight", "a.bias", "b.weight", "x.weight"]),
                        st.sampled_from([n for n in names if n.endswith(".safetensors")] +
                                        ["gone.safetensors", "../model-00001-of-00002.safetensors", "/etc/passwd",
                                         "", ".", "sub/x.safetensors"]), max_size=4),
        st.sampled_from([[], "x", None, {"a.weight": 3}]))

    def check(case):
        kind, target, edit = case
        directory = tmp_path / "shards"
        directory.mkdir(exist_ok=True)
        for name, raw in originals.items():
            (directory / name).write_bytes(raw)
        if kind == "bytes":
            (directory / target).write_bytes(apply_edits(originals[target], edit))
        elif kind == "remove":
            (directory / target).unlink()
        else:
            (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": edit}))
        check_case("shards", directory)

    cases = st.one_of(
        st.sampled_from(names).flatmap(lambda n: st.tuples(st.just("bytes"), st.just(n),
                                                           byte_edits(len(originals[n]), [(0, 200)]))),
        st.tuples(st.just("remove"), st.sampled_from(names), st.none()),
        st.tuples(st.just("index"), st.none(), weight_maps))
    explore(cases, examples, check)


# .npy headers and .npz members ------------------------------------------------------------------------------------

_DESCRS = ["'<f4'", "'<f8'", "'<f2'", "'|b1'", "'<i8'", "'|u1'", "'<c8'", "'>f4'", "'|O'", "'<U5'", "'|V8'",
           "'<M8[s]'", "'<f3'", "'bogus'", "[('a', '<f4'), ('b', '<i8')]", "('<f4', (2,))", "3", "'<f4' '"]
_NPY_SHAPES = ["(32, 16)", "(16, 32)", "()", "(0, 16)", "(512,)", "(1000000, 1000000)", "(-1, 16)", "(-32, -16)",
               "(2**63, 2)", "(9223372036854775807, 2)", "(1.5,)", "[32, 16]", "(32, 16", "((32,),)", "'32'"]


@st.composite
def npy_files(draw, *, data: bytes = b""):
    """A .npy file with a drawn header (dtypes numeric, pickled, text, structured, invalid; shapes good, empty,
    negative, 10^12 elements, overflowing, malformed; versions 1 to 9) and a drawn amount of data."""
    descr = draw(st.sampled_from(_DESCRS))
    shape = draw(st.one_of(st.sampled_from(_NPY_SHAPES[:5]), st.sampled_from(_NPY_SHAPES)))
    fortran = draw(st.sampled_from(["False", "False", "True", "0", "'x'"]))
    body = draw(st.sampled_from([
        f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}",
        f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}",
        f"{{'descr': {descr}, 'shape': {shape}}}", f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, "
        "'extra': 1}", "(" * 300 + ")" * 300, "{'descr': '<f4', 'fortran_order': False, 'shape': (", ""]))
    version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (9, 9)]))
    text = body.encode("latin1")
    length_bytes = 2 if version[0] == 1 else 4
    pad = -(6 + 2 + length_bytes + len(text) + 1) % 64
    text += b" " * pad + draw(st.sampled_from([b"\n", b"\n", b"", b"\x00"]))
    length = draw(st.one_of(st.just(len(text)), st.integers(0, 2 ** (8 * length_bytes) - 1)))
    head = b"\x93NUMPY" + bytes(version) + length.to_bytes(length_bytes, "little") + text
    try:
        dims = ast.literal_eval(shape)
    except (ValueError, SyntaxError):
        dims = None
    fits = isinstance(dims, tuple) and all(type(n) is int and 0 <= n < 1 << 16 for n in dims)
    declared = math.prod(dims) * 4 if fits else -1
    size = draw(st.one_of(st.just(declared), st.integers(0, 4096))) if 0 <= declared < 1 << 16 else \
        draw(st.integers(0, 4096))
    return head + (data * (size // max(len(data), 1) + 1))[:size] if data else \
        head + (np.arange(size, dtype=np.uint8) * 37 % 251).tobytes()


@pytest.mark.parametrize("examples", _budget("npy_header"))
def test_npy_header_edits(tmp_path, examples):
    path = tmp_path / "w.npy"

    def check(raw):
        path.write_bytes(raw)
        check_case("npy header", path)

    explore(npy_files(), examples, check)


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@st.composite
def npz_files(draw):
    """An archive of drawn members: valid arrays, pickled (object) arrays, members cut short or extended, not .npy
    at all, with a header of 10^12 elements, with a drawn .npy header; stored or deflated; then a member's data
    byte flipped after writing (a CRC error), its compression method or encryption flag changed."""
    payloads = {
        "valid": _npy_bytes(_gaussian(32, 16)), "int": _npy_bytes(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "pickled": _npy_bytes(np.array([{"a": 1}], dtype=object)), "text": b"not an array",
        "huge": _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }") + bytes(64),
        "empty": b""}
    members = []
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(list(payloads) + ["cut", "longer", "drawn"]))
        if kind == "cut":
            raw = payloads["valid"][:draw(st.integers(0, len(payloads["valid"]) - 1))]
        elif kind == "longer":
            raw = payloads["valid"] + b"\x00" * draw(st.integers(1, 64))
        elif kind == "drawn":
            raw = draw(npy_files())
        else:
            raw = payloads[kind]
        name = draw(st.sampled_from([f"m{i}.npy", f"m{i}.npy", "notes.txt", "dir/", f"a/../m{i}.npy", "w.npy",
                                     "\u00e9t\u00e9.npy"]))
        members.append((name, raw, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings_ignored():  # names given twice on purpose
        for name, raw, method in members:
            archive.writestr(name, raw, compress_type=method)
    data = bytearray(buffer.getvalue())
    infos = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()
    if infos:
        info = draw(st.sampled_from(infos))
        n, e = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + n + e
        damage = draw(st.sampled_from(["none", "none", "crc", "method", "encrypted"]))
        if damage == "crc" and info.compress_size:
            data[start + draw(st.integers(0, info.compress_size - 1))] ^= 0x10
        elif damage == "method":
            for at in (info.header_offset + 8, _central_entry(data, info) + 10):
                data[at] = draw(st.sampled_from([1, 9, 12, 14, 99]))
        elif damage == "encrypted":
            for at in (info.header_offset + 6, _central_entry(data, info) + 8):
                data[at] |= 1
    return bytes(data)


def _npy_header(text: bytes) -> bytes:
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def _central_entry(data: bytearray, info: zipfile.ZipInfo) -> int:
    """Offset of the member's central directory entry."""
    at = 0
    while True:
        at = data.index(b"PK\x01\x02", at)
        if int.from_bytes(data[at + 42:at + 46], "little") == info.header_offset:
            return at
        at += 4


@pytest.mark.parametrize("examples", _budget("npz_members"))
def test_npz_member_edits(tmp_path, examples):
    path = tmp_path / "m.npz"

    def check(raw):
        path.write_bytes(raw)
        check_case("npz members", path)

    explore(npz_files(), examples, check)


# Torch archives and pickles ---------------------------------------------------------------------------------------

def _numel_spans(pickled: bytes) -> list[tuple[int, int]]:
    """(start, end) of each storage's element count in a torch pickle: the integer before the TUPLE of each
    persistent id."""
    try:
        ops = list(pickletools.genops(pickled))
    except ValueError:  # damaged by an earlier change
        return []
    spans = []
    for i, (op, _, _) in enumerate(ops):
        if op.name == "BINPERSID":
            j = i - 1
            while j > 0 and not _is_int_op(ops[j][0].name):
                j -= 1
            spans.append((ops[j][2], ops[j + 1][2]))
    return spans


def _is_int_op(name: str) -> bool:
    return name in ("BININT", "BININT1", "BININT2", "LONG1")


def _hostile_pickle(kind: str, marker: Path | None = None) -> bytes:
    """Pickles torch's weights_only unpickler would act on to no good, or refuse: code execution, memory bombs,
    self-reference, deep nesting, a persistent id of the wrong type."""
    if kind == "os.system":
        return pickle.dumps({"w": _Call(os.system, (f"touch {marker}",))}, protocol=2)
    if kind == "exec":
        return pickle.dumps({"w": _Call(exec, (f"open({str(marker)!r}, 'w').close()",))}, protocol=4)
    if kind == "torch.save":
        return pickle.dumps({"w": _Call(torch.save, ({}, str(marker)))}, protocol=2)
    return {
        "bytearray": b"\x80\x02}q\x00X\x01\x00\x00\x00xc__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85Rs.",
        "FloatTensor": b"\x80\x02}q\x00X\x01\x00\x00\x00xctorch\nFloatTensor\nJ\x00\x00\x00\x40\x85Rs.",
        "self-reference": b"\x80\x02}q\x00X\x01\x00\x00\x00xh\x00s.",
        "deep": b"\x80\x02" + b"}X\x01\x00\x00\x00a" * 10_000 + b"}" + b"s" * 10_000 + b".",
        "bad-persistent-id": b"\x80\x02}q\x00X\x01\x00\x00\x00xX\x03\x00\x00\x00abcQs.",
        "garbage": b"\x80\x02\xfe\xfe\xfe.",
    }[kind]


class _Call:
    """Pickles as a call of `func(*args)` (what a hostile checkpoint holds)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _rezip(members: dict[str, bytes], method=zipfile.ZIP_STORED, duplicate: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings_ignored():
        for name, raw in members.items():
            archive.writestr(name, raw, compress_type=method)
        if duplicate in members:
            archive.writestr(duplicate, members[duplicate])
    return buffer.getvalue()


@contextlib.contextmanager
def warnings_ignored():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def torch_zips(original: bytes):
    """A torch archive rebuilt with 1-3 changes: data.pkl's bytes damaged (with a valid CRC), a storage key renamed
    (a data.pkl that refers to a missing storage), a storage's element count changed (up to 10^12), a member
    dropped, cut or extended, a hostile pickle, members deflated or named twice, byte order 'big' or bogus; then
    maybe a byte of the archive flipped (a CRC error in a storage record or data.pkl)."""

    @st.composite
    def build(draw):
        source = zipfile.ZipFile(io.BytesIO(original))
        members = {info.filename: source.read(info) for info in source.infolist()}
        records = [name for name in members if "/data/" in name]
        method, duplicate = zipfile.ZIP_STORED, None
        for _ in range(draw(st.integers(1, 3))):
            change = draw(st.sampled_from(["pickle-bytes", "key", "numel", "drop", "resize", "hostile", "deflate",
                                           "duplicate", "byteorder"]))
            pickled = members.get("model/data.pkl", b"")
            if change == "pickle-bytes" and pickled:
                members["model/data.pkl"] = apply_edits(pickled, draw(byte_edits(len(pickled), [])))
            elif change == "key" and pickled:
                members["model/data.pkl"] = re.sub(rb"X\x01\x00\x00\x00" + draw(st.sampled_from([b"0", b"1", b"2"])),
                                                   b"X\x01\x00\x00\x009", pickled, count=1)
            elif change == "numel" and _numel_spans(pickled):
                start, end = draw(st.sampled_from(_numel_spans(pickled)))
                numel = draw(st.sampled_from([0, 1, 15, 10**6, 10**9, 2**31 - 1, 10**12]))
                value = b"J" + struct.pack("<i", numel) if numel < 2**31 else b"\x8a" + _long1(numel)
                members["model/data.pkl"] = pickled[:start] + value + pickled[end:]
            elif change == "drop":
                members.pop(draw(st.sampled_from(sorted(members))), None)
            elif change == "resize" and records:
                name = draw(st.sampled_from(records))
                if name in members:
                    members[name] = members[name][:draw(st.integers(0, len(members[name])))] + \
                        bytes(draw(st.sampled_from([0, 0, 4, 64])))
            elif change == "hostile":
                members["model/data.pkl"] = _hostile_pickle(draw(st.sampled_from(
                    ["bytearray", "FloatTensor", "self-reference", "deep", "bad-persistent-id", "garbage"])))
            elif change == "deflate":
                method = zipfile.ZIP_DEFLATED
            elif change == "duplicate":
                duplicate = draw(st.sampled_from(sorted(members))) if members else None
            elif change == "byteorder":
                members["model/byteorder"] = draw(st.sampled_from([b"big", b"middle", b""]))
        raw = _rezip(members, method, duplicate)
        return apply_edits(raw, draw(byte_edits(len(raw), []))) if draw(st.booleans()) else raw

    return build()


def _long1(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return bytes([len(data)]) + data


@needs_torch
@pytest.mark.parametrize("examples", _budget("torch_zip_members"))
def test_torch_zip_member_edits(valid, tmp_path, examples):
    original = valid["torch-zip"].read_bytes()
    path = tmp_path / "model.pt"

    def check(raw):
        path.write_bytes(raw)
        check_case("torch zip members", path)

    explore(torch_zips(original), examples, check)


# Declared sizes, hostile pickles, code execution ------------------------------------------------------------------

def _huge_safetensors(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    return path


def _huge_npy(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }")
                     + bytes(64))
    return path


def _huge_npz(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", _npy_header(b"{'descr': '<f4', 'fortran_order': False, "
                                              b"'shape': (1000000, 1000000), }") + bytes(64))
        archive.writestr("ok.npy", _npy_bytes(_gaussian(32, 16)))
    return path


def _torch_with_numel(tmp_path, numel, *, legacy):
    path = tmp_path / ("huge.bin" if legacy else "huge.pt")
    torch.save({"w": torch.randn(32, 16)}, path, _use_new_zipfile_serialization=not legacy)
    raw = path.read_bytes()
    if legacy:
        begin, end = _pickle_ends(raw, 4)[2:]  # magic number, protocol version, system info, then the object
        (span,) = _numel_spans(raw[begin:end])
        path.write_bytes(raw[:begin + span[0]] + b"\x8a" + _long1(numel) + raw[begin + span[1]:])
    else:
        members = {info.filename: zipfile.ZipFile(path).read(info) for info in zipfile.ZipFile(path).infolist()}
        name = next(n for n in members if n.endswith("data.pkl"))
        (span,) = _numel_spans(members[name])
        members[name] = members[name][:span[0]] + b"\x8a" + _long1(numel) + members[name][span[1]:]
        path.write_bytes(_rezip(members))
    return path


@pytest.mark.parametrize("build", [
    _huge_safetensors, _huge_npy, _huge_npz,
    pytest.param(lambda tmp_path: _torch_with_numel(tmp_path, 10**12, legacy=False), marks=needs_torch),
    pytest.param(lambda tmp_path: _torch_with_numel(tmp_path, 10**12, legacy=True), marks=needs_torch),
    pytest.param(lambda tmp_path: _torch_with_numel(tmp_path, 10**9, legacy=True), marks=needs_torch),
], ids=["safetensors", "npy", "npz", "torch-zip", "torch-legacy", "torch-legacy-1e9"])
def test_a_declared_shape_of_10_to_the_12_is_never_allocated(tmp_path, build):
    """A header that declares 10^12 elements over 64 bytes of data: an error (of the file, or of that tensor in an
    archive whose other member is read), in a few milliseconds and without allocating the declared size."""
    path = build(tmp_path)
    check_case("declared 10^12", path)
    spectra, results = _read_spectra(path)
    tensors, _ = _read_every_array(path)
    assert spectra in ("input-error", "layer-errors") and tensors in ("input-error", "layer-errors")
    if path.suffix == ".npz":
        assert [r.name for r in results if isinstance(r, LayerSpectrum)] == ["ok"]


@needs_torch
@pytest.mark.parametrize("kind", ["bytearray", "FloatTensor"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_pickled_allocations_larger_than_the_file_are_refused(valid, tmp_path, kind, container):
    """weights_only allows bytearray(n) and tensor constructors: 1 GiB of zeros from a 40-byte pickle unless the
    call is refused before torch runs it."""
    path = _hostile_file(valid, tmp_path, _hostile_pickle(kind), container)
    check_case("hostile pickle", path)
    with pytest.raises(InputError, match="would allocate|constructor that allocates"):
        list(iter_tensors(path))


def _hostile_file(valid, tmp_path, pickled: bytes, container: str) -> Path:
    """A zip-format torch file whose data.pkl is `pickled`, or a legacy file that is just the pickle."""
    if container == "legacy":
        path = tmp_path / "model.bin"
        path.write_bytes(pickled)
        return path
    source = zipfile.ZipFile(valid["torch-zip"])
    members = {info.filename: source.read(info) for info in source.infolist()}
    members["model/data.pkl"] = pickled
    path = tmp_path / "model.pt"
    path.write_bytes(_rezip(members))
    return path


@needs_torch
@pytest.mark.parametrize("payload", ["os.system", "exec", "torch.save"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_pickles_that_would_run_code_are_refused_and_run_nothing(valid, tmp_path, payload, container):
    """A checkpoint whose pickle calls os.system, exec or torch.save to write a marker file: refused with a message
    that says why, on the command line too, and the marker file is never written."""
    marker = tmp_path / "code-ran"
    path = _hostile_file(valid, tmp_path, _hostile_pickle(payload, marker), container)
    with pytest.raises(InputError, match=r"refuses to unpickle .*\(weights_only\)") as info:
        list(iter_spectra(path, on_error="skip"))
    assert str(path) in str(info.value)
    # refused before torch.load sees the file, by the global's name
    assert {"os.system": "posix.system", "exec": "builtins.exec", "torch.save": "torch.serialization.save"}[
        payload] in str(info.value)
    check_case("code execution", path)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main(["esd", str(path)]) == 2
    assert stderr.getvalue().startswith("hteval: error:") and "refuses to unpickle" in stderr.getvalue()
    assert len(stderr.getvalue().strip().splitlines()) == 1 and "Traceback" not in stderr.getvalue()
    assert not marker.exists()


@needs_torch
@pytest.mark.parametrize("kind", ["self-reference", "deep", "bad-persistent-id", "garbage"])
def test_malformed_pickles_end_in_an_input_error(valid, tmp_path, kind):
    path = _hostile_file(valid, tmp_path, _hostile_pickle(kind), "zip")
    check_case("hostile pickle", path)
    spectra, _ = _read_spectra(path)
    assert spectra == "input-error"


@needs_torch
def test_shared_and_expanded_tensors(tmp_path):
    """A dict stored under 2^30 paths (one dict shared at each of 30 levels) is flattened once; a tensor expanded
    to 10^12 elements over a storage of 16 (stride 0) is that tensor's error, not 10^12 reads."""
    shared = {"w": torch.randn(32, 16)}
    for _ in range(30):
        shared = {"a": shared, "b": shared}
    path = tmp_path / "shared.pt"
    torch.save({"tree": shared, "expanded": torch.randn(1, 1).expand(10**6, 10**6)}, path)
    check_case("shared and expanded", path)
    names = [t.name for t in iter_tensors(path)]
    assert names == ["tree" + ".a" * 30 + ".w", "expanded"]
    (expanded,) = [r for r in iter_spectra(path, on_error="skip") if r.name == "expanded"]
    assert expanded.status == "error" and "views" in expanded.reason


def test_a_corrupt_npz_member_is_that_layers_error(tmp_path):
    """A CRC error in one member: that member is a per-layer error; the other member is read."""
    path = tmp_path / "m.npz"
    np.savez(path, bad=_gaussian(32, 16), good=_gaussian(32, 16, seed=1))
    raw = bytearray(path.read_bytes())
    start, _ = _zip_member_span(bytes(raw), "bad.npy")
    raw[start + 200] ^= 0x01
    path.write_bytes(bytes(raw))
    results = list(iter_spectra(path, on_error="skip"))
    assert [(r.name, getattr(r, "status", "ok")) for r in results] == [("bad", "error"), ("good", "ok")]
    assert "CRC" in results[0].reason
    with pytest.raises(InputError, match="m.npz: bad: cannot read archive member: Bad CRC-32"):
        list(iter_spectra(path, on_error="raise"))


@needs_torch
def test_a_corrupt_torch_storage_record_is_that_layers_error(valid, tmp_path):
    """A flipped byte in one storage record of a zip-format torch file: the tensors on that storage fail its CRC
    check (torch.load itself checks no CRC); the others are read."""
    raw = bytearray(valid["torch-zip"].read_bytes())
    start, _ = _zip_member_span(bytes(raw), "model/data/0")
    raw[start + 10] ^= 0x01
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(raw))
    errors = {r.name for r in iter_spectra(path, on_error="skip") if getattr(r, "status", "") == "error"}
    assert errors == {"layer.weight", "tied.weight"}


def test_surrogate_and_duplicate_names(tmp_path):
    """A name holding a lone surrogate (valid JSON, but no UTF-8 can encode it) is escaped, so that it prints; a
    name given twice in a header is refused (json.loads would keep the last silently)."""
    header = b'{"w\\ud800": {"dtype": "F32", "shape": [32, 16], "data_offsets": [0, 2048]}}'
    path = tmp_path / "m.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + _gaussian(32, 16).tobytes())
    (tensor,) = iter_tensors(path)
    assert tensor.name == "w\\ud800"
    _check_cli(path)  # the name is printed to a strict UTF-8 stream
    duplicate = b'{"w": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "w": {"dtype": "F32", ' \
                b'"shape": [0], "data_offsets": [0, 0]}}'
    path.write_bytes(len(duplicate).to_bytes(8, "little") + duplicate)
    with pytest.raises(InputError, match="key 'w' appears twice"):
        list(iter_tensors(path))


@pytest.mark.parametrize("shard", ["../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors"])
def test_index_naming_a_path_outside_its_directory_is_refused(valid, tmp_path, shard):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(InputError, match="not a file name beside the index"):
        list(iter_tensors(index))


def test_dtypes_of_readable_arrays():
    """The ml_dtypes floats the readers return can be summed as the checks above do."""
    for dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        _check_array(np.ones((2, 2), dtype=dtype), 1 << 10)
