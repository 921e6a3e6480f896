"""Exception classes of hteval: one base, each carrying what debugging needs."""


class HtevalError(Exception):
    """Base class of every error hteval raises on purpose."""


class InputError(HtevalError):
    """A file, tensor or argument hteval cannot use; the message names the source and the problem."""

    def __init__(self, message: str, *, source: str | None = None, layer: str | None = None):
        self.source = source
        self.layer = layer
        where = ": ".join(p for p in (source, layer) if p)
        super().__init__(f"{where}: {message}" if where else message)


class LayerSkipped(HtevalError):
    """A tensor that is valid but not a layer hteval fits (1-D, too few eigenvalues); `reason` says why."""

    def __init__(self, layer: str, reason: str):
        self.layer = layer
        self.reason = reason
        super().__init__(f"{layer}: skipped ({reason})")


class OutputError(InputError):
    """An output folder a run cannot write to: another run holds it, or a write failed (full disk, read-only
    folder). `path` names the folder or file; `errno` is the failed write's error number (None when the folder is
    in use), `rows` the complete rows the run's table keeps (None where no table was being written)."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None,
                 rows: int | None = None):
        self.path = path
        self.errno = errno
        self.rows = rows
        super().__init__(message)


class RunMismatchError(OutputError):
    """An output folder that holds another run's results (another checkpoint, other options, another hteval
    version, or rows without a run record), which a run refuses to resume (`hteval.run_identity`). `differences`
    lists what differs, each as "old, not new"."""

    def __init__(self, message: str, *, path: str | None = None, differences: list[str] | None = None):
        self.differences = list(differences or [])
        super().__init__(message, path=path)
