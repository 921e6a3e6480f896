"""What an output folder's results are a run of, so that a second run on the folder resumes only its own run.

A run that writes a resumable folder (`hteval analyze`, `hteval compare --layers`, `analyze_checkpoints`, a
`Tracker`) records its identity in FOLDER/run.json when it starts, under the folder's lock (`hteval.run_lock`):

* command: what wrote the folder (COMMANDS);
* source: the checkpoint as given (a path, or a model's class) and its content fingerprint (`hteval.fingerprint`);
  none for many checkpoints, whose sub-folders record one each, or for a Tracker, whose steps are its training's;
* models, and the options that change the numbers (NUMBER_OPTIONS): prob, seed, chains, draws, sampler, and for
  analyze randomize and hierarchical; warmup and max_draws only where a model is fitted by NUTS (exact draws have
  neither);
* layers: the layer filter (a glob pattern, a list of names, or null: every layer);
* hteval_version (and, for information only, when the run started).

Options that change how the numbers are computed or shown, not what they estimate (workers, batched, svd, engine,
scheduler, figures, report), are not part of it. Priors are part of the models, so of the hteval version.

A second run on the folder, before it reads the checkpoint or writes anything:

* the same identity: it resumes;
* a run that only does more of the same (ADDITIVE): a layer filter that selects every layer the folder holds rows
  of (a wider one), randomize or hierarchical turned on, all else the same: it resumes, adds the new layers, the
  shuffled copies' rows or the pooling (over every row, at the end), and run.json records the new settings;
* anything else differs: RunMismatchError (exit status 2), one line that names each difference as "old, not new",
  and the folder left as it was;
* no run.json but result rows (a folder written by an hteval from before run records), or a run.json that cannot
  be read: refused the same way, since what the rows are a run of cannot be checked;
* a run.json written by another hteval version: refused (`hteval_version` differs).

--restart (`hteval.run_restart`) replaces the folder's run whatever it is.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hteval import names
from hteval.errors import OutputError, RunMismatchError
from hteval.fingerprint import fingerprint
from hteval.rowfile import RowFile, atomic_write, complete_lines, read_table
from hteval.run_lock import LOCK_FILE

RUN_FILE = "run.json"
#: what wrote a folder, as messages name it
COMMANDS = {"analyze": "hteval analyze", "compare": "hteval compare --layers",
            "checkpoints": "hteval analyze of many checkpoints", "tracker": "a Tracker"}
#: the options of analyze and compare_layers that change the numbers
NUMBER_OPTIONS = ("prob", "seed", "chains", "draws", "warmup", "max_draws", "sampler", "randomize", "hierarchical")
#: of those, the ones that only NUTS fits use
NUTS_OPTIONS = ("warmup", "max_draws")
#: options that a resumed run may turn on (not off): they add rows (the shuffled copies) or an output computed from
#: every row at the end (the pooling), and change no row the folder has
ADDITIVE = ("randomize", "hierarchical")
#: every command's result table (network_analysis.LAYER_TABLE, layer_comparison.COMPARISON_TABLE,
#: checkpoints.CHECKPOINT_TABLE) and the sub-folder of many checkpoints (checkpoints.CHECKPOINT_DIR): rows in one
#: of them are results
RESULT_TABLES = ("layers.csv", "comparisons.csv", "checkpoints.csv")
CHECKPOINT_FOLDERS = "checkpoints"
#: what a refused run can do, in the words of the command line (Python: restart=True, another out)
RESTART_HINT = "use --restart to replace it or choose another --out"


def run_identity(command: str, source: Any, models: Sequence[str], layers=None, **options: Any) -> dict[str, Any]:
    """The identity of a run: `command` (a key of COMMANDS) over `source` (a checkpoint path or a model in memory;
    None: none of its own) with these models, layer filter and options (the NUMBER_OPTIONS among them count)."""
    from hteval import __version__

    identity: dict[str, Any] = {"command": command, "source": None, "models": list(models),
                                "layers": _filter(layers), "options": _number_options(models, options),
                                "hteval_version": __version__}
    if source is not None:
        from hteval.frameworks import source_label

        found = fingerprint(source)
        identity["source"] = {"path": source_label(source), "sha256": found.sha256, "bytes": found.size,
                              "sampled": found.sampled}
    return json.loads(json.dumps(identity, default=_plain))  # as it reads back from run.json


def with_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """The NUMBER_OPTIONS of `hteval.network_analysis.analyze` as given in `options` (meant for it), or else its
    defaults: what a run that analyzes each of many checkpoints, or each tracked step, passes on."""
    from hteval.network_analysis import analyze  # which builds on this module

    parameters = inspect.signature(analyze).parameters
    return {k: options.get(k, parameters[k].default) for k in NUMBER_OPTIONS if k in parameters}


def recorded(folder: Path, hint: str = RESTART_HINT) -> dict[str, Any] | None:
    """The identity `folder` records (None: no run.json); RunMismatchError where run.json cannot be read."""
    path = Path(folder) / RUN_FILE
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(f"cannot read {path}: {err.strerror}", path=str(path)) from err
    except ValueError:  # not JSON
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("command"), str):
        raise RunMismatchError(f"{path} cannot be read as a run record, so what {_shown(folder)} holds a run of "
                               f"cannot be checked; {hint}", path=str(folder))
    return document


def check(folder: Path, identity: dict[str, Any], table: RowFile | None = None,
          hint: str = RESTART_HINT) -> dict[str, Any] | None:
    """Refuse (RunMismatchError) unless `folder` holds no results or holds a run of `identity`, or one that `identity`
    does more of (`differences`; a layer filter read against `table`'s rows); returns the identity recorded there
    (None: none)."""
    folder = Path(folder)
    old = recorded(folder, hint)
    if old is None:
        if holds_results(folder):
            raise RunMismatchError(f"{_shown(folder)} holds results without a run record ({RUN_FILE}: written by "
                                   "an earlier hteval), so what they are a run of cannot be checked; " + hint,
                                   path=str(folder), differences=["no run record"])
        return None
    found = differences(old, identity, lambda: held_layers(table))
    if found:
        raise RunMismatchError(f"{_shown(folder)} holds a run {'; '.join(found)}; {hint}", path=str(folder),
                               differences=found)
    return old


def claim(folder: Path, identity: dict[str, Any], table: RowFile | None = None,
          hint: str = RESTART_HINT) -> dict[str, Any] | None:
    """With `folder`'s lock held: what restarts cut short left beside it dealt with (`hteval.run_restart`), then
    `check`, then run.json written where the folder had none or this run does more of it (`widened`). Returns the
    identity recorded before (None: none)."""
    from hteval.run_restart import sweep_leftovers  # run_restart builds on this module

    folder = Path(folder)
    sweep_leftovers(folder)
    old = check(folder, identity, table, hint)
    if widened(old, identity) or old is None:
        started = (old or {}).get("started") or datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
        document = json.dumps({**identity, "started": started}, indent=2).encode()
        atomic_write(folder / RUN_FILE, lambda handle: handle.write(document))
    return old


@contextmanager
def claiming(folder: Path | None, identity: dict[str, Any] | None, table: RowFile | None = None
             ) -> Iterator[dict[str, Any] | None]:
    """`claim` for a block (nothing without a folder). A run that leaves nothing but run.json in a folder that held
    no run takes run.json away again, so that the lock removes the folder it made (`hteval.run_lock`)."""
    if folder is None or identity is None:
        yield None
        return
    old = claim(folder, identity, table)
    try:
        yield old
    finally:
        if old is None and _only_run_file(Path(folder)):
            (Path(folder) / RUN_FILE).unlink(missing_ok=True)


def widened(old: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """Whether a run resumed the folder's run doing more of it (a wider layer filter, an ADDITIVE option turned on:
    what `claim` allows), or under another path to the same checkpoint."""
    return old is not None and {**old, "started": None} != {**identity, "started": None}


def differences(old: dict[str, Any], new: dict[str, Any], held: Callable[[], Sequence[str]]) -> list[str]:
    """What differs between the identity a folder records and a new run's, each as "old, not new"; a layer filter
    that selects every layer in held(), and an ADDITIVE option turned on, are no difference."""
    if old.get("command") != new["command"]:
        was = old.get("command")
        return [f"of {COMMANDS.get(was, was)}, not {COMMANDS[new['command']]}"]
    found = []
    if old.get("hteval_version") != new["hteval_version"]:
        found.append(f"made by hteval {old.get('hteval_version')}, not {new['hteval_version']}")
    was, now = old.get("source") or {}, new["source"] or {}
    if was.get("sha256") != now.get("sha256"):
        found.append(_source_change(was, now))
    if old.get("models") != new["models"]:
        found.append(f"with models {_value(old.get('models'))}, not {_value(new['models'])}")
    was_options, now_options = old.get("options") or {}, new["options"]
    for key in dict.fromkeys([*now_options, *was_options]):
        turned_on = key in ADDITIVE and not was_options.get(key) and now_options.get(key)
        if was_options.get(key) != now_options.get(key) and not turned_on:
            found.append(f"with {key} {_value(was_options.get(key))}, not {_value(now_options.get(key))}")
    if old.get("layers") != new["layers"]:
        left_out = [name for name in held() if not selects(new["layers"], name)]
        if left_out:
            found.append(f"with layers {_filter_text(old.get('layers'))}, not {_filter_text(new['layers'])}, "
                         f"which leaves out its rows of {_names(left_out)}")
    return found


def selects(layers, name: str) -> bool:
    """Whether the layer filter (as `hteval.spectra.iter_spectra` reads it) selects the tensor `name`."""
    if layers is None:
        return True
    if isinstance(layers, str):
        return fnmatch.fnmatchcase(name, layers)
    return name in set(layers)


def held_layers(table: RowFile | None) -> list[str]:
    """The layer names of the rows `table` holds."""
    if table is None or table.path is None:
        return []
    rows = read_table(table.path)
    if rows.empty or names.NAME not in rows:
        return []
    return list(dict.fromkeys(rows[names.NAME].dropna().astype(str)))


def holds_results(folder: Path) -> bool:
    """Whether `folder` holds rows of some hteval command: in a result table, or in a checkpoint's sub-folder."""
    if any(complete_lines(folder / table).count("\n") > 1 for table in RESULT_TABLES):
        return True
    checkpoints = folder / CHECKPOINT_FOLDERS
    return checkpoints.is_dir() and any(sub.is_dir() and holds_results(sub) for sub in checkpoints.iterdir())


def _only_run_file(folder: Path) -> bool:
    try:
        return set(os.listdir(folder)) - {LOCK_FILE} == {RUN_FILE}
    except OSError:
        return False


def _number_options(models: Sequence[str], options: Mapping[str, Any]) -> dict[str, Any]:
    from hteval.models import MODELS

    sampler = options.get("sampler", "auto")
    exact = all(sampler != "nuts" and hasattr(MODELS.get(m), "posterior_draws") for m in models)
    return {k: options[k] for k in NUMBER_OPTIONS if k in options and not (exact and k in NUTS_OPTIONS)}


def _filter(layers):
    if layers is None or isinstance(layers, str):
        return layers
    return sorted(str(name) for name in layers)


def _plain(value):
    """JSON for numpy numbers (a seed given as np.int64, say)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _shown(folder: Path) -> str:
    return f"{os.fspath(folder).rstrip(os.sep)}{os.sep}"


def _source_change(was: dict, now: dict) -> str:
    old_sha, new_sha = str(was.get("sha256") or "")[:8], str(now.get("sha256") or "")[:8]
    if not was or not now:
        return f"of {_source(was)}, not of {_source(now)}"
    if was.get("path") == now.get("path"):
        return f"of {was['path']} as it was (sha {old_sha}), not as it is now (sha {new_sha})"
    return f"of {was.get('path')} (sha {old_sha}), not of {now['path']} (sha {new_sha})"


def _source(source: dict) -> str:
    return f"{source.get('path')} (sha {str(source.get('sha256'))[:8]})" if source else "no checkpoint of its own"


def _value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _filter_text(layers) -> str:
    if layers is None:
        return "(every layer)"
    if isinstance(layers, str):
        return repr(layers)
    return _names(layers)


def _names(found: Sequence[str]) -> str:
    shown = ", ".join(found[:3])
    return shown + (f" and {len(found) - 3} more" if len(found) > 3 else "")


__all__ = ["RUN_FILE", "check", "claim", "claiming", "recorded", "run_identity", "widened", "with_defaults"]
