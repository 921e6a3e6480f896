"""The command line: help of every sub-command, esd output (table, JSON), one-line errors, exit codes."""

import argparse
import io
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from hteval import cli, names
from hteval.cli import build_parser, main
from hteval.infer import RAW_FLOOR_FACTOR


def _subcommands() -> list[str]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"hteval": parser, **action.choices}


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
    assert tuple(layer) == (*names.RECORD_FIELDS, *names.EIG_SUMMARY_FIELDS, names.STATUS, names.REASON, "warnings")
    assert layer["warnings"] == []
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
    assert "1 tensor skipped:" in out and "dense.bias [32] skipped: 1-D tensor" in out


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


def test_bad_layer_listed_with_exit_3_or_exit_2_with_on_error_raise(tmp_path, capsys):
    weights = np.ones((32, 16), dtype=np.float32)
    weights[0, 0] = np.inf
    good = np.eye(32, 16, dtype=np.float32)
    save_file({"bad.weight": weights, "good.weight": good}, tmp_path / "m.safetensors")
    assert main(["esd", str(tmp_path / "m.safetensors"), "--json"]) == 3
    status = {r[names.NAME]: r[names.STATUS] for r in json.loads(capsys.readouterr().out)}
    assert status == {"bad.weight": names.STATUS_ERROR, "good.weight": names.STATUS_OK}
    assert main(["esd", str(tmp_path / "m.safetensors"), "--on-error", "raise"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        f"hteval: error: {tmp_path / 'm.safetensors'}: bad.weight: 1 non-finite value (NaN or inf)"]


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



_NO_DEFAULT = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


@pytest.mark.parametrize("command", list(_parsers()))
def test_every_option_states_its_default(command):
    """Each option's help says what happens when it is not given, and shows a default value where it has one."""
    parser = _parsers()[command]
    formatter = parser._get_formatter()
    checked = 0
    for action in parser._actions:
        if isinstance(action, _NO_DEFAULT) or not action.option_strings or action.required:
            continue
        text = formatter._expand_help(action)
        assert re.search(r"\bdefault\b", text, re.IGNORECASE), f"{command} {action.option_strings[0]}: {text}"
        if action.default is not None and not isinstance(action.default, bool):
            assert str(action.default) in text, f"{command} {action.option_strings[0]}: {text}"
        assert "(default: None)" not in text and "(default: False)" not in text
        checked += 1
    assert checked


def test_fit_description_names_every_model_and_output():
    description = _parsers()["fit"].description
    assert all(model in description for model in names.MODEL_LABELS)
    for output in ("summary.json", "posterior.nc", "esd.png", "rank.png", "trace.png", "prior_predictive.png"):
        assert output in description


@pytest.fixture
def two_layers(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "two.safetensors"
    save_file({"a.weight": rng.standard_normal((64, 32)).astype(np.float32),
               "b.weight": rng.standard_normal((48, 32)).astype(np.float32),
               "b.bias": rng.standard_normal(32).astype(np.float32)}, path)
    return path


@pytest.mark.parametrize("command", ["fit", "compare"])
def test_several_layers_ask_for_the_layer_option(command, two_layers, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([command, str(two_layers), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 layers found: choose one with --layer" in err and not out.exists()


def test_a_1d_tensor_is_named_and_counted_in_words(two_layers, tmp_path, capsys):
    assert main(["fit", str(two_layers), "--layer", "b.bias", "--out", str(tmp_path / "out")]) == 2
    assert "no 2-D floating-point weight to fit: 1 tensor is 1-D (b.bias)" in capsys.readouterr().err
    assert main(["esd", str(two_layers), "--layers", "*.bias"]) == 2
    assert "1 tensor is 1-D (b.bias)" in capsys.readouterr().err
    rng = np.random.default_rng(2)
    save_file({f"n{i}.bias": rng.standard_normal(8).astype(np.float32) for i in range(3)}, tmp_path / "b.safetensors")
    assert main(["esd", str(tmp_path / "b.safetensors")]) == 2
    assert "3 tensors are 1-D (n0.bias, n1.bias, n2.bias)" in capsys.readouterr().err


def _skipped(name):
    return {names.NAME: name, names.STATUS: names.STATUS_SKIPPED}


def _fitted(name):
    return {names.NAME: name, names.MODEL: "htmp-exact", names.STATUS: names.STATUS_OK, names.SECONDS: 0.1}


def test_work_bar_counts_fits_and_estimates_from_the_second_fit():
    """Skipped tensors are not fits; the first fit (JAX's start and compilation, 20 s here) does not set the
    rate: after it there is no estimate, and after a second fit one second later the rate is 1 fit/s (the
    run's average, 2 fits in 21 s, would give 21 s left instead of 2)."""
    clock = [0.0]
    bar = cli.work_bar(unit="fit", desc="fits", file=io.StringIO(), mininterval=0)
    bar._time, bar.start_t = (lambda: clock[0]), 0.0
    bar.count(_skipped("norm.bias"), 1, 5)  # total 5 rows: 1 skipped tensor, 4 fits
    assert (bar.n, bar.total) == (0, 4) and "<?" in str(bar)
    clock[0] = 20.0
    bar.count(_fitted("a.weight"), 2, 5)
    assert (bar.n, bar.total) == (1, 4) and "<?" in str(bar)
    clock[0] = 21.0
    bar.count(_fitted("b.weight"), 3, 5)
    assert (bar.n, bar.total) == (2, 4) and "00:21<00:02" in str(bar)
    bar.close()


def test_analyze_bar_counts_this_runs_fits(checkpoint, tmp_path, monkeypatch):
    """The bar of `hteval analyze` ends at the number of fits: not the skipped bias, and on resuming, none."""
    bars = []
    make = cli.work_bar
    monkeypatch.setattr(cli, "work_bar", lambda **kwargs: bars.append(make(**kwargs)) or bars[-1])
    argv = ["analyze", str(checkpoint), "--out", str(tmp_path / "run"), "--no-figures", "--workers", "1"]
    assert main(argv) == 0
    assert (bars[-1].n, bars[-1].total, bars[-1].unit) == (1, 1, "fit")
    assert main(argv) == 0  # resumed: everything done, nothing fitted
    assert (bars[-1].n, bars[-1].total or 0) == (0, 0)


# One bad layer never hides the good ones: exit status 3 ------------------------------------------------------

@pytest.fixture
def nan_layer(tmp_path):
    """Two 64 x 32 layers, one holding a NaN."""
    rng = np.random.default_rng(3)
    bad = rng.standard_normal((64, 32)).astype(np.float32)
    bad[10, 20] = np.nan
    path = tmp_path / "nan.safetensors"
    save_file({"bad.weight": bad, "good.weight": rng.standard_normal((64, 32)).astype(np.float32)}, path)
    return path


NAN_REASON = "1 non-finite value (NaN or inf)"


@pytest.mark.parametrize("as_json", [False, True])
def test_esd_reports_the_good_layer_and_the_bad_one_with_its_reason(nan_layer, as_json, capsys):
    assert main(["esd", str(nan_layer), *(["--json"] if as_json else [])]) == 3
    captured = capsys.readouterr()
    if as_json:
        bad, good = json.loads(captured.out)
        assert bad == {names.NAME: "bad.weight", names.SHAPE: [64, 32], names.STATUS: names.STATUS_ERROR,
                       names.REASON: NAN_REASON}
        assert (good[names.NAME], good[names.STATUS], good[names.N_EIGS]) == ("good.weight", names.STATUS_OK, 32)
    else:
        assert captured.out.splitlines()[1].split()[:2] == ["good.weight", "64x32"]
        assert f"1 layer failed:\n  bad.weight [64x32] error: {NAN_REASON}" in captured.out
    where = "the status=error records above" if as_json else "the failed layers listed above"
    assert captured.err.splitlines() == [f"hteval: 1 of 2 layers failed: see {where}"]


def test_analyze_fits_the_good_layer_lists_the_bad_one_and_exits_3_again_on_resuming(nan_layer, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["analyze", str(nan_layer), "--out", str(out), "--no-figures", "--workers", "1"]
    assert main(argv) == 3
    table = pd.read_csv(out / "layers.csv").set_index(names.NAME)
    assert table.loc["bad.weight", names.STATUS] == names.STATUS_ERROR
    assert table.loc["bad.weight", names.ERROR] == NAN_REASON
    assert table.loc["good.weight", names.STATUS] == names.STATUS_OK
    assert capsys.readouterr().err.splitlines()[-1] == (f"hteval: 1 of 2 layers failed: see status=error rows in "
                                                         f"{out / 'layers.csv'}")
    written = (out / "layers.csv").read_text()
    assert main(argv) == 3 and (out / "layers.csv").read_text() == written  # resumed: nothing refitted


def test_compare_layers_compares_the_good_layer_and_lists_the_bad_one(nan_layer, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", str(nan_layer), "--layers", "*", "--models", "htmp-exact,powerlaw", "--chains", "2",
            "--draws", "200", "--out", str(out), "--workers", "1"]
    assert main(argv) == 3
    table = pd.read_csv(out / "comparisons.csv").set_index(names.NAME)
    assert (table.loc["bad.weight", names.STATUS], table.loc["bad.weight", names.ERROR]) == (names.STATUS_ERROR,
                                                                                           NAN_REASON)
    assert table.loc["good.weight", names.STATUS] == names.STATUS_OK and table.loc["good.weight", names.BEST]
    assert capsys.readouterr().err.splitlines()[-1] == (f"hteval: 1 of 2 layers failed: see status=error rows in "
                                                         f"{out / 'comparisons.csv'}")


def test_analyze_of_many_checkpoints_counts_failed_layers_and_unreadable_checkpoints(nan_layer, tmp_path, capsys):
    run = tmp_path / "ckpts"
    run.mkdir()
    rng = np.random.default_rng(5)
    save_file({name: rng.standard_normal((64, 32)).astype(np.float32) for name in ("bad.weight", "good.weight")},
              run / "step_1.safetensors")
    (run / "step_2.safetensors").write_bytes(nan_layer.read_bytes())
    (run / "step_3.safetensors").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    assert main(["analyze", str(run), "--out", str(out), "--no-figures", "--workers", "1"]) == 3
    table = pd.read_csv(out / "checkpoints.csv")
    failed = table[table[names.STATUS] == names.STATUS_ERROR]
    assert failed[names.CHECKPOINT].tolist() == ["step_2", "step_3"]
    assert failed[names.ERROR].iloc[0] == NAN_REASON and "step_3.safetensors" in failed[names.ERROR].iloc[1]
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"hteval: 1 of 4 layers and 1 of 3 checkpoints failed: see status=error rows in {out / 'checkpoints.csv'}")


@pytest.mark.parametrize("command", [["esd"], ["analyze", "--out", "OUT"],
                                     ["compare", "--layers", "*", "--out", "OUT"]])
def test_an_unreadable_file_is_one_error_with_exit_2(command, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a checkpoint")
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = subprocess.run([sys.executable, "-m", "hteval.cli", argv[0], str(path), *argv[1:]], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("hteval")]
    assert line.startswith(f"hteval: error: {path}: ")


def test_help_states_the_exit_status_convention_and_the_resolution_bound(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 when every layer was read" in text and "3 when esd, analyze or compare --layers" in text
    assert "2 for bad input" in text and "1 for other failures" in text
    fit = " ".join(_parsers()["fit"].format_help().split())
    assert "in [-floor, floor] (zeros and rounding, as eigvalsh gives) are counted as censored" in fit
    assert f"{RAW_FLOOR_FACTOR:g} x M x the largest eigenvalue" in fit
    esd = " ".join(_parsers()["esd"].format_help().split())
    assert "exit with status 3" in esd and "(default: skip)" in esd


def test_mostly_censored_layers_are_warned_of_by_esd_and_analyze(tmp_path, capsys, caplog):
    """A rank-4 layer (28 of 32 eigenvalues censored): esd flags it in the table and the JSON, analyze logs one
    warning and report.md's notes name it, the layer's JSON carries the warning."""
    rng = np.random.default_rng(4)
    low = (rng.standard_normal((64, 4)) @ rng.standard_normal((4, 32))).astype(np.float32)
    path = tmp_path / "low.safetensors"
    save_file({"full.weight": rng.standard_normal((64, 32)).astype(np.float32), "low.weight": low}, path)
    assert main(["esd", str(path)]) == 0
    assert "warning: low.weight: 28 of 32 eigenvalues (88%) are at or below the floor" in capsys.readouterr().out
    assert main(["esd", str(path), "--json"]) == 0
    warnings = {r[names.NAME]: r["warnings"] for r in json.loads(capsys.readouterr().out)}
    assert warnings["full.weight"] == [] and "structural zero" in warnings["low.weight"][0]
    out = tmp_path / "run"
    assert main(["analyze", str(path), "--out", str(out), "--no-figures", "--workers", "1"]) == 0
    logged = [r.getMessage() for r in caplog.records if "structural zero" in r.getMessage()]
    assert len(logged) == 1 and "in 1 layer(s): low.weight" in logged[0]
    report = (out / "report.md").read_text()
    assert "**Mostly censored layers.**" in report and "* low.weight: 88% censored" in report
    assert "full.weight:" not in report
    document = json.loads((out / "layers" / "low.weight.htmp-exact.json").read_text())
    assert "28 of 32 eigenvalues" in document["warnings"][0]


def test_fit_of_the_bad_layer_is_its_own_error(nan_layer, tmp_path, capsys):
    """fit reads the one layer it is asked for: a bad one is an input error naming it, not "0 layers found"."""
    assert main(["fit", str(nan_layer), "--layer", "bad.weight", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"hteval: error: {nan_layer}: bad.weight: {NAN_REASON}"]
