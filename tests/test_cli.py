"""The command line: help of every sub-command, esd output (table, JSON), one-line errors, exit codes."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from hteval import names
from hteval.cli import build_parser, main


def _subcommands() -> list[str]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


@pytest.fixture
def checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "model.safetensors"
    save_file({"dense.weight": rng.standard_normal((64, 32)).astype(np.float32),
               "dense.bias": rng.standard_normal(32).astype(np.float32)}, path)
    return path


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in _subcommands())])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "usage: hteval" in capsys.readouterr().out


def test_esd_is_a_subcommand():
    assert "esd" in _subcommands()


def test_esd_json_records(checkpoint, capsys):
    assert main(["esd", str(checkpoint), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    layer, bias = sorted(records, key=lambda r: r[names.STATUS])
    assert tuple(layer) == (*names.RECORD_FIELDS, *names.EIG_SUMMARY_FIELDS, names.STATUS, names.REASON)
    assert (layer[names.NAME], layer[names.SHAPE], layer[names.GAMMA]) == ("dense.weight", [64, 32], 0.5)
    assert layer[names.STATUS] == names.STATUS_OK and layer[names.DTYPE] == "float32"
    assert bias == {names.NAME: "dense.bias", names.SHAPE: [32], names.STATUS: names.STATUS_SKIPPED,
                    names.REASON: "1-D tensor (bias, norm or scalar), not a layer"}


def test_esd_table_lists_layers_then_skipped(checkpoint, capsys):
    assert main(["esd", str(checkpoint), "--min-eigs", "8"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split() == [*names.RECORD_FIELDS, *names.EIG_SUMMARY_FIELDS]
    assert row.split()[:3] == ["dense.weight", "64x32", "64"]
    assert "1 tensors skipped:" in out and "dense.bias [32] skipped: 1-D tensor" in out


def test_esd_layers_pattern(checkpoint, capsys):
    assert main(["esd", str(checkpoint), "--layers", "dense.w*", "--json"]) == 0
    assert [r[names.NAME] for r in json.loads(capsys.readouterr().out)] == ["dense.weight"]


def test_bad_path_is_one_line_and_exit_2():
    result = subprocess.run([sys.executable, "-m", "hteval.cli", "esd", "/no/such/model.safetensors"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    message = "hteval: error: /no/such/model.safetensors: no such file or directory"
    assert result.stderr.splitlines() == [message]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "esd", str(tmp_path / "absent.npz")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("absent.npz: no such file or directory")


@pytest.mark.parametrize("argv", [["esd"], ["esd", "x.safetensors", "--bundled"]])
def test_esd_needs_exactly_one_source(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("hteval: error: ")


def test_bad_layer_exit_2_or_listed_with_on_error_skip(tmp_path, capsys):
    weights = np.ones((32, 16), dtype=np.float32)
    weights[0, 0] = np.inf
    good = np.eye(32, 16, dtype=np.float32)
    save_file({"bad.weight": weights, "good.weight": good}, tmp_path / "m.safetensors")
    assert main(["esd", str(tmp_path / "m.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["esd", str(tmp_path / "m.safetensors"), "--on-error", "skip", "--json"]) == 0
    status = {r[names.NAME]: r[names.STATUS] for r in json.loads(capsys.readouterr().out)}
    assert status == {"bad.weight": names.STATUS_ERROR, "good.weight": names.STATUS_OK}


def test_esd_bundled(capsys):
    assert main(["esd", "--bundled", "--layers", "pooler.*", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r[names.NAME], r[names.STATUS]) for r in records] == [("pooler.dense.bias", "skipped"),
                                                                   ("pooler.dense.weight", "ok")]


HEAVY = ("jax", "numpyro", "arviz", "matplotlib", "xarray", "pandas", "scipy")


@pytest.mark.parametrize("code", ["import hteval", "from hteval.cli import main; main(['--help'])",
                                  "from hteval.cli import main; main(['fit', '--help'])"])
def test_import_and_help_load_no_heavy_library(code):
    """`import hteval` and `hteval --help` load none of JAX, numpyro, ArviZ, matplotlib (nor pandas, scipy):
    each command imports what it needs when it runs."""
    probe = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
    probe += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("command", ["fit", "compare"])
def test_fit_and_compare_take_bundled_and_suggest_the_closest_layers(command, tmp_path, capsys):
    argv = [command, "--bundled", "--layer", "encoder.layer.2.intermediate.dense", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer not found: encoder.layer.2.intermediate.dense" in err
    assert "closest: encoder.layer.2.intermediate.dense.bias, encoder.layer.2.intermediate.dense.weight" in err
    assert "`hteval esd " in err and "lists every tensor" in err


def test_fit_takes_a_checkpoint_or_eigenvalues_not_both(tmp_path, capsys):
    np.save(tmp_path / "e.npy", np.arange(1.0, 40.0))
    argv = ["fit", "--bundled", "--eigenvalues", str(tmp_path / "e.npy"), "--gamma", "0.5", "--out", str(tmp_path)]
    assert main(argv) == 2 and "not both" in capsys.readouterr().err

