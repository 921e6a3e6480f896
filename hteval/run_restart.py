"""--restart: a new run built beside its output folder and swapped in whole, so that the folder always holds one
run's results, the old run's or the new one's.

`restartable` gives analyze, compare_layers and analyze_checkpoints their restart=True. The run then holds OUT's
lock (`hteval.run_lock`) throughout, so that no other run resumes OUT meanwhile, and:

1. writes into a new sibling folder OUT.hteval-restart-TOKEN, which holds a marker file (UNFINISHED) while the run
   is unfinished;
2. once the run has finished, takes the new folder's lock too, removes the marker and swaps the two folders in one
   step (Linux's renameat2 RENAME_EXCHANGE): OUT is the new run, OUT.hteval-restart-TOKEN the old one. The lock
   file moves with each folder, so OUT stays locked through the swap;
3. deletes the old run, then releases both locks.

What a kill leaves, at each point:

* during 1: OUT holds the old run, untouched; beside it the unfinished new run, with its marker. The next
  `--restart` with the same settings resumes it there (other settings: it is deleted and started afresh); the next
  run without --restart resumes OUT's old run and deletes it.
* between the marker's removal and the swap (two system calls): OUT holds the old run; the finished new run
  beside it is deleted by the next run.
* during 3: OUT holds the new run; the old one beside it, partly deleted, is deleted by the next run.

Where the file system cannot swap in one step (no RENAME_EXCHANGE: other systems, some network file systems),
step 2 is two renames: OUT to OUT.hteval-replaced-TOKEN, then the new folder to OUT. A kill between the two leaves
no OUT; the next run on OUT finds both folders and puts the old run back in OUT (entry by entry, so that a kill
during that is finished by the run after), then deletes the new one.

Leftovers are dealt with only by a run holding OUT's lock, so never while the restart that made them is alive.
--restart replaces only a folder that holds an hteval run or nothing (a folder of other files is refused), and never
one that holds the checkpoint it reads.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import inspect
import logging
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hteval.errors import OutputError, RunMismatchError
from hteval.rowfile import write_error
from hteval.run_identity import RUN_FILE, holds_results
from hteval.run_lock import LOCK_FILE, RunLock

logger = logging.getLogger(__name__)

#: a file in a restart's folder while its run is unfinished
UNFINISHED = ".hteval-restart-unfinished"
_NEW, _OLD = "restart", "replaced"  # sibling folders OUT.hteval-restart-TOKEN, OUT.hteval-replaced-TOKEN
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV})


def restartable[T](run: Callable[..., T]) -> Callable[..., T]:
    """`run` (whose parameters include `out` and `restart`) with restart=True meaning: run into a new folder and
    swap it in for `out` at the end (`replace_run`). restart=False, or out=None, runs it as it is."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def restarting(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        if not bound.arguments.get("restart") or bound.arguments.get("out") is None:
            return run(*args, **kwargs)
        bound.arguments["restart"] = False
        out = Path(bound.arguments["out"])
        _refuse_source_inside(out, next(iter(bound.arguments.values())))

        def into(folder: Path) -> T:
            bound.arguments["out"] = folder
            return run(*bound.args, **bound.kwargs)

        return replace_run(out, into)

    return restarting


def replace_run[T](out: Path, run: Callable[[Path], T]) -> T:
    """run(folder) into a new folder beside `out`, then swapped in for `out` (the module's steps); returns what run
    returned. `out` is locked throughout."""
    out = Path(os.path.realpath(out))
    outer = RunLock(out).acquire()
    inner = None
    try:
        _refuse_foreign(out)
        folder, result = _run_beside(out, run)
        inner = RunLock(folder).acquire()  # its lock file moves into out/ with it: out/ is never unlocked
        (folder / UNFINISHED).unlink(missing_ok=True)
        old = _swap(folder, out)
        _remove(old)
        return result
    finally:
        outer.release()  # first: the lock file now at out/ is the new run's, which `inner` holds till the end
        if inner is not None:
            inner.release()


def sweep_leftovers(out: Path, *, resume: bool = False) -> Path | None:
    """With `out`'s lock held: put back the old run of a swap cut short between its two renames, and delete the
    other folders that restarts of `out` left beside it; with resume=True, keep one unfinished restart's folder
    and return it (None: none)."""
    out = Path(os.path.realpath(out))
    new, old = _leftovers(out)
    for token, folder in old.items():
        if token in new:  # cut short between the renames: out/ is this run's empty folder
            _move_back(folder, out)
        _remove(folder)
    kept = None
    for folder in new.values():
        if resume and kept is None and (folder / UNFINISHED).exists():
            kept = folder
        else:
            _remove(folder)
    return kept


def _run_beside[T](out: Path, run: Callable[[Path], T]) -> tuple[Path, T]:
    """run(folder) into an unfinished restart of `out` left by a killed one (where its run is this one), or else
    into a new folder; the folder and the result."""
    kept = sweep_leftovers(out, resume=True)
    if kept is not None:
        try:
            return kept, _run_into(kept, run)
        except RunMismatchError:  # a restart with other settings was cut short there
            _remove(kept)
    folder = out.with_name(f"{out.name}.hteval-{_NEW}-{secrets.token_hex(6)}")
    try:
        folder.mkdir()
        (folder / UNFINISHED).write_text(f"an unfinished hteval --restart of {out}\n")
    except OSError as err:
        _remove(folder)
        raise write_error(folder, err) from err
    return folder, _run_into(folder, run)


def _run_into[T](folder: Path, run: Callable[[Path], T]) -> T:
    """run(folder); a run that fails having written no results takes its folder away (one with results stays,
    for the next --restart to resume)."""
    try:
        return run(folder)
    except BaseException:
        if not holds_results(folder):
            _remove(folder)
        raise


def _refuse_foreign(out: Path) -> None:
    entries = sorted(set(os.listdir(out)) - {LOCK_FILE})
    if entries and not (out / RUN_FILE).exists() and not holds_results(out):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputError(f"{out} holds no hteval run (it holds {shown}); --restart replaces only a folder that "
                          "an hteval run wrote, so choose another --out", path=str(out))


def _refuse_source_inside(out: Path, source: Any) -> None:
    """A checkpoint inside `out` would be deleted with the old run: refused (OutputError)."""
    paths = source if isinstance(source, (list, tuple)) else [source]
    inside = os.path.realpath(out) + os.sep
    for path in paths:
        if isinstance(path, (str, os.PathLike)) and os.path.realpath(path).startswith(inside):
            raise OutputError(f"{os.fspath(path)} lies inside {out}, which --restart replaces whole (deleting it with "
                              "the old run); move it elsewhere or choose another --out", path=str(out))


def _swap(new: Path, out: Path) -> Path:
    """`new` in place of `out`; returns where the old `out` now is."""
    try:
        if _exchange(new, out):
            return new
        old = out.with_name(f"{out.name}.hteval-{_OLD}-{new.name.rsplit('-', 1)[-1]}")
        os.rename(out, old)
        os.rename(new, out)
        return old
    except OSError as err:
        raise write_error(out, err) from err


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step; False where the system or the file system cannot (then nothing is done)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library older than glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))


def _leftovers(out: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The restart folders (new runs) and replaced folders (old runs) beside `out`, by token."""
    pattern = re.compile(re.escape(out.name) + rf"\.hteval-({_NEW}|{_OLD})-([0-9a-f]{{12}})")
    found: dict[str, dict[str, Path]] = {_NEW: {}, _OLD: {}}
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return {}, {}
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found[match[1]][match[2]] = entry
    return found[_NEW], found[_OLD]


def _move_back(old: Path, out: Path) -> None:
    """The old run's entries back into `out`, one at a time (a kill in between leaves the rest for the next run)."""
    logger.warning("%s: a --restart was stopped while it swapped folders; the old run is put back", out)
    for entry in old.iterdir():
        if entry.name != LOCK_FILE:
            os.rename(entry, out / entry.name)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


__all__ = ["UNFINISHED", "replace_run", "restartable", "sweep_leftovers"]
