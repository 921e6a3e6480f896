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
