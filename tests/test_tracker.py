"""The training-loop tracker: one row per layer per recorded step in the table analyze_checkpoints writes, the same
rows as saved checkpoints of the same weights give, resuming without refitting, what stays on disk, and the
callbacks of the Hugging Face Trainer, Lightning and Keras, each run on a tiny model for a few steps."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from hteval import names
from hteval.checkpoints import CHECKPOINT_TABLE, analyze_checkpoints
from hteval.errors import InputError
from hteval.network_analysis import table_columns
from hteval.report.dynamics import DYNAMICS_REPORT, DYNAMICS_TABLE
from hteval.tracker import Tracker

FIGURE = f"dynamics_kappa_{names.DEFAULT_MODEL}.png"


def _weights(step: int) -> dict[str, np.ndarray]:
    """Two fitted layers whose spectra grow a heavier tail with the step, and a bias (a skipped row)."""
    rng = np.random.default_rng(0)
    w, u, v = rng.standard_normal((96, 48)), rng.standard_normal(96), rng.standard_normal(48)
    return {"fc.weight": (w + 0.02 * step ** 0.5 * np.outer(u, v)).astype(np.float32),
            "fc.bias": np.zeros(48, np.float32),
            "head.weight": rng.standard_normal((64, 32)).astype(np.float32)}


def _layer_names(model) -> set[str]:
    from hteval.frameworks import named_tensors

    return {tensor.name for tensor in named_tensors(model)}


def _check_rows(out, steps, layers: set[str]) -> pd.DataFrame:
    """One row per layer per step, the steps as given, and the dynamics view drawn."""
    table = pd.read_csv(out / CHECKPOINT_TABLE)
    assert list(table.columns) == [names.CHECKPOINT, names.STEP, *table_columns([names.DEFAULT_MODEL])]
    assert sorted(set(table[names.STEP])) == list(steps)
    for step, rows in table.groupby(names.STEP):
        assert sorted(rows[names.NAME]) == sorted(layers), step
        assert set(rows[names.CHECKPOINT]) == {f"step_{step}"}
    assert table[table[names.MODEL].notna()].kappa_median.notna().all()
    assert (out / FIGURE).stat().st_size > 10_000 and (out / DYNAMICS_TABLE).exists()
    return table


def test_each_recorded_step_appends_its_layers_and_close_draws_the_dynamics(tmp_path):
    with Tracker(tmp_path, every=2, plot_every=None) as tracker:
        for step in range(7):
            rows = tracker.update(step, _weights(100 * step))
            assert (rows is None) == (step % 2 == 1)
        assert not (tmp_path / FIGURE).exists()  # plot_every=None: drawn by close() only
    table = _check_rows(tmp_path, [0, 2, 4, 6], set(_weights(0)))
    assert tracker.steps == [0, 2, 4, 6] and list(tracker.table[names.STEP].unique()) == [0, 2, 4, 6]
    assert "| layer | step_0 | step_2 | step_4 | step_6 |" in (tmp_path / DYNAMICS_REPORT).read_text()
    skipped = table[table[names.NAME] == "fc.bias"]
    assert (skipped[names.STATUS] == names.STATUS_SKIPPED).all()
    kappa = table[table[names.NAME] == "fc.weight"].set_index(names.STEP).kappa_median
    assert kappa[6] < kappa[0]  # the growing spike
    # keep="last": only the latest step's per-layer files stay
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_6"]
    assert (tmp_path / "checkpoints" / "step_6" / "layers" / "fc.weight.htmp-exact.json").exists()


def test_the_rows_are_those_of_saved_checkpoints_of_the_same_weights(tmp_path):
    steps = (0, 50, 400)
    saved = tmp_path / "run"
    saved.mkdir()
    with Tracker(tmp_path / "tracked", seed=3) as tracker:
        for step in steps:
            tracker.update(step, _weights(step))
            save_file(_weights(step), saved / f"step_{step}.safetensors")
    ours = tracker.table
    theirs = analyze_checkpoints(saved, tmp_path / "saved", figures=False, seed=3, workers=1)
    assert list(ours.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(ours.drop(columns=names.SECONDS), theirs.drop(columns=names.SECONDS))


def test_a_new_tracker_on_the_same_folder_fits_no_recorded_step_again(tmp_path, monkeypatch):
    with Tracker(tmp_path, plot_every=None) as tracker:
        for step in (0, 10):
            tracker.update(step, _weights(step))
    before = pd.read_csv(tmp_path / CHECKPOINT_TABLE)

    def refuse(*args, **kwargs):
        raise AssertionError("a recorded step was fitted again")

    monkeypatch.setattr("hteval.tracker.analyze", refuse)
    again = Tracker(tmp_path)
    assert again.steps == [0, 10] and again.recorded(10) and not again.due(10) and again.due(20)
    assert again.update(0, _weights(0)) is None and again.update(10, _weights(10)) is None
    monkeypatch.undo()
    assert len(again.update(20, _weights(20))) == 3
    after = pd.read_csv(tmp_path / CHECKPOINT_TABLE)
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    # the earlier run's last folder goes once this run's first step is recorded (keep="last")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_20"]


def test_a_step_cut_short_is_fitted_again_without_duplicate_rows(tmp_path):
    Tracker(tmp_path, plot_every=None).update(5, _weights(5))
    # killed after the rows were appended but before the folder was marked finished
    (tmp_path / "checkpoints" / "step_5" / ".finished").unlink()
    resumed = Tracker(tmp_path, plot_every=None)
    assert not resumed.recorded(5)
    resumed.update(5, _weights(5))
    table = resumed.table
    assert len(table) == 3 and resumed.recorded(5)


def test_what_stays_on_disk_and_when_the_figure_is_drawn(tmp_path):
    with Tracker(tmp_path / "all", keep="all", plot_every=None) as tracker:
        for step in (0, 1, 2):
            tracker.update(step, _weights(step))
    assert sorted(p.name for p in (tmp_path / "all" / "checkpoints").iterdir()) == ["step_0", "step_1", "step_2"]
    tracker = Tracker(tmp_path / "none", keep="none", plot_every=0)
    tracker.update(3, _weights(3))
    assert not any((tmp_path / "none" / "checkpoints").iterdir())
    assert (tmp_path / "none" / FIGURE).exists()  # plot_every=0: drawn at every update


@pytest.mark.parametrize(("arguments", "match"), [({"every": 0}, "every"), ({"keep": "some"}, "keep"),
                                                  ({"models": ("nope",)}, "unknown model")])
def test_bad_settings_are_refused(tmp_path, arguments, match):
    with pytest.raises(InputError, match=match):
        Tracker(tmp_path, **arguments).update(0, _weights(0))


@pytest.mark.parametrize("step", [-1, 2.5, True, "3"])
def test_a_step_is_a_non_negative_integer(tmp_path, step):
    with pytest.raises(InputError, match="training step"):
        Tracker(tmp_path).update(step, _weights(0))


def test_importing_the_callbacks_package_imports_no_framework():
    code = ("import sys, hteval.callbacks, hteval.tracker; "
            "print([m for m in ('torch', 'transformers', 'lightning', 'keras', 'jax') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_hugging_face_trainer_callback(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer's own requirement
    from hteval.callbacks.hf import TrackerCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    tokens = torch.randint(0, 64, (16, 16), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": t, "labels": t} for t in tokens]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=4, report_to=[],
                                          use_cpu=True, per_device_train_batch_size=4, logging_steps=2,
                                          save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset,
                                   callbacks=[TrackerCallback(tmp_path / "hteval")])
    trainer.train()
    _check_rows(tmp_path / "hteval", [0, 2, 4], _layer_names(model))  # every logging_steps=2, and the start


def test_lightning_callback(tmp_path):
    torch = pytest.importorskip("torch")
    lightning = pytest.importorskip("lightning.pytorch")
    from hteval.callbacks.lightning import TrackerCallback

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(24, 32), torch.nn.ReLU(), torch.nn.Linear(32, 20),
                                           torch.nn.ReLU(), torch.nn.Linear(20, 3))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 24), torch.randint(0, 3, (48,)))
    module = Tiny()
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[TrackerCallback(tmp_path)])
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    _check_rows(tmp_path, [0, 3, 6], _layer_names(module))  # the start and each epoch's end, 3 batches an epoch


@pytest.mark.parametrize(("every", "steps"), [(None, [0, 3, 6]), (2, [0, 2, 5, 6])])
def test_keras_callback(tmp_path, every, steps):
    """3 batches an epoch, run 2 at a time: the steps each execution ends at are 2, 3, 5 and 6, and with every=2
    the first at or past each multiple of 2 is recorded."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    from hteval.callbacks.keras import TrackerCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(20, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=2)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((48, 24)).astype(np.float32), rng.integers(0, 3, 48)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[TrackerCallback(tmp_path, every=every)])
    _check_rows(tmp_path, steps, _layer_names(model))
