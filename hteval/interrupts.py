"""Stopping a run on SIGINT or SIGTERM as cleanly as it finishes: its finished rows kept, no row half-written, no
process left behind, one line said.

* **The library** stops on KeyboardInterrupt (Ctrl-C, a notebook's interrupt) wherever it waits. Worker processes
  are ended at once (`stop_processes`, `stop_pool`), a Dask run's futures are cancelled and a cluster it started is
  closed, queued work is dropped, the run's lock is released, and the KeyboardInterrupt goes on to the caller.
* **Worker processes** run `setup_worker` first. They ignore SIGINT, so that a Ctrl-C sent to the terminal's whole
  process group reaches only the parent, which ends them: no traceback from every worker. Each one ends itself when
  its parent is gone, however the parent ended (kill -9 included).
* **A row** is written inside `signals_deferred()`, so that neither a stop signal nor the immediate exit below can
  cut a line short: a signal that arrives meanwhile takes effect once the line is whole.
* **The command line** runs inside `handling_signals()`. SIGTERM, what `kill` and batch schedulers send, raises
  `Interrupted` there, a KeyboardInterrupt, so that it takes Ctrl-C's path through the library; the command prints
  one line and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal, or a first
  that has not ended the process within STOP_SECONDS, ends it at once from a watchdog thread: the main thread may be
  inside a call that Python cannot interrupt (C code that holds the GIL), or in a shutdown that waits on
  something. That exit waits for a row being written, kills every process the run started, removes its
  semaphores and prints the line.

A code path that starts processes, pools or clusters needs no registration here: ending it from the watchdog
kills every descendant of this process, and its own try/finally (or `with`) serves the KeyboardInterrupt path.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

logger = logging.getLogger(__name__)

#: the signals that stop a run
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds from the first stop signal to the end of the process at the latest (the command line)
STOP_SECONDS = 1.5

# held while a row is written, so that the immediate exit (from another thread) waits for the line to be whole
_writing = threading.RLock()
# signals_deferred blocks open in the main thread, and the signals that arrived inside them
_deferring = 0
_deferred: list[int] = []


class Interrupted(KeyboardInterrupt):
    """A stop signal as an exception; `signum` is the signal. A KeyboardInterrupt, so that what already cleans up
    after Ctrl-C (this library, multiprocessing, tqdm, a notebook cell) cleans up after SIGTERM the same way."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(interruption: BaseException) -> int:
    """The exit status of a command stopped by `interruption`: 128 + its signal number, the shell's convention (a
    KeyboardInterrupt that is not an Interrupted came from SIGINT)."""
    return 128 + int(getattr(interruption, "signum", signal.SIGINT))


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Run the block whole as far as a stop is concerned: a stop signal that arrives in it (in the main thread,
    under `handling_signals`) is raised when it ends, and the immediate exit waits for it. Row writes run in it."""
    global _deferring
    main = threading.current_thread() is threading.main_thread()
    with _writing:
        if main:
            _deferring += 1
        try:
            yield
        finally:
            if main:
                _deferring -= 1
    if main and not _deferring and _deferred:
        signum = _deferred[0]
        _deferred.clear()
        _on_signal(signum, None)


class StopHandling:
    """What `handling_signals` yields: set `describe` to a function that says, in one line, what the run has done
    so far (read when it is stopped); `report(interruption)` prints that line and returns the exit status."""

    def __init__(self, describe: Callable[[], str]):
        self.describe = describe
        self.first: int | None = None  # the first stop signal the main thread took up
        self.reported = False

    def line(self) -> str:
        try:
            return " ".join(self.describe().split())
        except Exception:  # noqa: BLE001 - the stop is said even if what the run did cannot be
            return "interrupted"

    def report(self, interruption: BaseException) -> int:
        """Print the line on stderr (once) and return the exit status for `interruption`."""
        if not self.reported:
            self.reported = True
            print(self.line(), file=sys.stderr, flush=True)
        return exit_status(interruption)


_handling: StopHandling | None = None


@contextmanager
def handling_signals(describe: Callable[[], str] = lambda: "interrupted") -> Iterator[StopHandling]:
    """The command line's handling of SIGINT and SIGTERM (main thread only; elsewhere the block runs as it is).

    The first signal raises `Interrupted` in the main thread; the command catches it as a KeyboardInterrupt, lets
    the library stop, and returns `report(err)` (the `hteval` program then ends with `exit_now`). A second
    signal, or STOP_SECONDS after the first, ends the process at once (`end_now`). The previous handlers are
    restored on leaving.
    """
    global _handling
    if threading.current_thread() is not threading.main_thread():
        yield StopHandling(describe)
        return
    handling = StopHandling(describe)
    watchdog = _Watchdog(handling)
    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(watchdog.wakeup, warn_on_full_buffer=False)
    _handling = handling
    watchdog.start()
    try:
        yield handling
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        _handling = None
        watchdog.stop()


def _on_signal(signum: int, frame) -> None:
    if _deferring:  # a row is being written: raised once it is whole
        _deferred.append(signum)
        return
    handling = _handling
    if handling is None:  # handling_signals ended while a row was being written
        raise Interrupted(signum)
    if handling.first is None:
        handling.first = signum
        raise Interrupted(signum)
    # a later signal: the watchdog ends the process, after a row being written


class _Watchdog(threading.Thread):
    """Reads the signals that arrive (Python's wakeup fd gets each one's number, whatever the main thread is doing)
    and ends the process at a second stop signal or STOP_SECONDS after the first."""

    def __init__(self, handling: StopHandling):
        super().__init__(name="hteval-stop-watchdog", daemon=True)
        self._handling = handling
        self._read, self.wakeup = os.pipe()
        os.set_blocking(self.wakeup, False)
        self._first: tuple[int, float] | None = None

    def run(self) -> None:
        while True:
            wait = None if self._first is None else max(self._first[1] + STOP_SECONDS - time.monotonic(), 0.0)
            if not select.select([self._read], [], [], wait)[0]:
                end_now(self._first[0], self._handling)
            data = os.read(self._read, 512)
            if not data:  # stop(): the block ended without a stop signal
                os.close(self._read)
                return
            for signum in (s for s in data if s in STOP_SIGNALS):
                if self._first is not None:
                    end_now(self._first[0], self._handling)
                self._first = (signum, time.monotonic())

    def stop(self) -> None:
        os.close(self.wakeup)
        self.join()


def end_now(signum: int, handling: StopHandling | None = None) -> NoReturn:
    """End this process at once with status 128 + signum, from any thread: after a row being written (none is
    started after), every process it started killed, its named semaphores removed (as its normal exit would),
    `handling`'s line printed unless it was already."""
    _writing.acquire()  # never released: the process ends holding it
    _kill_descendants()
    _remove_semaphores()
    if handling is not None and not handling.reported:
        handling.reported = True
        os.write(2, f"\n{handling.line()}\n".encode(errors="replace"))
    os._exit(128 + int(signum))


def exit_now(status: int) -> NoReturn:
    """End the `hteval` program with `status` once an interrupted command has stopped and said so: output and logs
    flushed, what end_now does, and not the interpreter's teardown, which takes seconds with JAX loaded and
    during which a second Ctrl-C would end the process by its signal rather than with `status`."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
            pass
    _writing.acquire()
    _kill_descendants()
    _remove_semaphores()
    os._exit(status)


def setup_worker() -> None:
    """First call of a worker process (a ProcessPoolExecutor's initializer, or the start of its target): ignore
    SIGINT, which a Ctrl-C sends to the whole process group, since the parent ends its workers itself; and end
    this process when the parent's end of its multiprocessing pipe closes (the parent exited, however) or,
    outside multiprocessing, when the parent pid changes. SIGTERM keeps its default, an immediate quiet end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with_parent, name="hteval-parent-watch", daemon=True).start()


def _end_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()  # returns when the parent's end of the pipe closes
    else:
        first = os.getppid()
        while os.getppid() == first:
            time.sleep(0.5)
    os._exit(1)


def stop_processes(processes: Iterable[multiprocessing.process.BaseProcess]) -> None:
    """End started worker processes at once and reap them. SIGKILL: a worker holds nothing that needs a clean end
    (rows are written by the parent; its files are written whole or not at all), and it ignores SIGINT."""
    started = [p for p in processes if p.pid is not None]
    for process in started:
        if process.exitcode is None:
            process.kill()
    for process in started:
        process.join()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Drop a process pool's queued tasks and end its workers at once, without waiting for the tasks they run
    (which `shutdown` would); the pool's threads and queues are then released as after a worker's crash."""
    # Python 3.14 has ProcessPoolExecutor.kill_workers(); before it the pool's processes are only in _processes
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    stop_processes(processes)
    pool.shutdown(wait=True)


def _kill_descendants() -> None:
    """SIGKILL every process below this one (workers, a fork server and its children, Dask's worker processes),
    except multiprocessing's resource tracker, which removes what is left registered once this process exits."""
    tracker = _resource_tracker_pid()
    for pid in _descendants(os.getpid()):
        if pid != tracker:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _descendants(root: int) -> list[int]:
    """The pids below `root`, from /proc (every depth); elsewhere multiprocessing's children of this process."""
    if not os.path.isdir("/proc"):
        return [p.pid for p in multiprocessing.active_children() if p.pid is not None]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _resource_tracker_pid() -> int | None:
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    return getattr(getattr(tracker, "_resource_tracker", None), "_pid", None)


def _remove_semaphores() -> None:
    """Run the cleanup that this process's exit would run for the named semaphores of its multiprocessing queues
    and locks; without it the resource tracker reports them as leaked."""
    synchronize = sys.modules.get("multiprocessing.synchronize")
    registry = getattr(sys.modules.get("multiprocessing.util"), "_finalizer_registry", None)
    if synchronize is None or not registry:
        return
    for finalizer in list(registry.values()):
        if getattr(finalizer, "_callback", None) is synchronize.SemLock._cleanup:
            try:
                finalizer()
            except Exception:  # noqa: BLE001, S110 - exiting regardless
                pass


def dask_setup(worker) -> None:
    """Dask's preload hook, run in each worker process of a LocalCluster that a run starts with
    preload=["hteval.interrupts"]: ignore SIGINT, as `setup_worker` does, so that a Ctrl-C sent to the terminal's
    process group stops the run through its parent (which closes the cluster), not with a traceback from every
    Dask worker. A Dask worker ends with its parent by itself (Dask's nanny pipe)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = ["STOP_SECONDS", "STOP_SIGNALS", "Interrupted", "StopHandling", "dask_setup", "end_now", "exit_now",
           "exit_status", "handling_signals", "setup_worker", "signals_deferred", "stop_pool", "stop_processes"]

