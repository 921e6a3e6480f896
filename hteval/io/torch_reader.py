"""PyTorch reader: .pt/.pth/.bin/.ckpt state dicts, loaded with `torch.load(weights_only=True)`.

torch is an optional dependency (`pip install 'hteval[torch]'`); it is imported only when such a file is read.
weights_only=True refuses arbitrary pickled objects, so reading a checkpoint cannot execute code.

Before torch.load sees a file, its pickles are walked opcode by opcode (pickletools, which runs nothing) and
checked against the bytes present, because torch allocates what a file declares before reading it: the storages
of a legacy (non-zip) file, and the objects some allowed constructors build (bytearray(2**31) is 2 GiB of zeros
from a 40-byte pickle). A global that torch.load(weights_only=True) would refuse is refused here, by its name. A
zip file's members must lie inside the file, uncompressed, and each storage record must hold exactly the bytes its
tensor declares; the records are memory-mapped, and each one's CRC-32 is checked when a tensor on it is first read
(torch.load checks none). A tensor that cannot be read (a CRC error, an unsupported dtype or layout, strides that
view more elements than its storage holds) is that tensor's error; the file's other tensors are read.
"""

import io
import logging
import math
import mmap
import pickle
import pickletools
import struct
import sys
import warnings
import zipfile
import zlib
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING  # the names torch.load maps too
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor, SkippedTensor, printable_name, unreadable

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hteval[torch]'"
# Training checkpoints (Lightning, many research repos) nest the state dict under one of these keys.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
# What torch.load raises on corrupt input that passed the checks here: its unpickler and rebuild functions raise
# whatever the malformed arguments provoke, and AssertionError for a persistent id of the wrong type.
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError,
                IndexError, AttributeError, AssertionError, OverflowError, struct.error, NotImplementedError)
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError)
#: the first object of a legacy torch.save file
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: nesting of state dicts deeper than this is a corrupt or hostile file, not a model
_MAX_DEPTH = 32
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then file name and extra field lengths


class _Global(NamedTuple):
    """A global a pickle names (module, qualified name): a placeholder, never imported."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


class _Storage(NamedTuple):
    """A storage a pickle declares: its key, the size of its elements and their number."""

    key: str
    itemsize: int
    numel: int


class _Opaque:
    """A value the scan does not model (a dict, the result of a call)."""


def iter_tensors(path: Path) -> Iterator[NamedTensor | SkippedTensor]:
    """Yield the tensors of a torch state dict, nested mappings flattened to dotted names, in stored order."""
    torch = _import_torch(path)
    state, crcs = _load(torch, path)
    checked: dict[int, bool] = {}
    for name, tensor in _flatten(torch, _unwrap(state), prefix="", path=path):
        yield _record(torch, printable_name(name or path.stem), tensor, path, crcs, checked)


def is_torch_tensor(obj: object) -> bool:
    """True for a torch.Tensor; never imports torch (an object can only be one if torch is already loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A CPU numpy copy of a torch tensor, keeping bfloat16 and float8 exactly (numpy has no such dtypes)."""
    torch = sys.modules["torch"]
    tensor = tensor.detach().cpu()
    exotic = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16)}
    for name, ml_type in (("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("float8_e5m2", ml_dtypes.float8_e5m2)):
        if hasattr(torch, name):
            exotic[getattr(torch, name)] = (torch.uint8, ml_type)
    if tensor.dtype in exotic:
        carrier, ml_type = exotic[tensor.dtype]
        return tensor.view(carrier).numpy().view(ml_type)
    return tensor.numpy()


def _import_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError as err:
        raise InputError(f"reading a PyTorch file needs torch, which is not installed: {INSTALL_HINT}",
                         source=str(path)) from err
    return torch


def _load(torch: Any, path: Path) -> tuple[Any, frozenset[tuple[int, int]] | None]:
    """The unpickled object, and for a zip file the (size, CRC-32) of its storage records."""
    try:
        with open(path, "rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"  # torch.load's own test
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", source=str(path)) from err
    crcs = _check_archive(path) if is_zip else _check_legacy(path)
    with warnings.catch_warnings():
        # a pickle protocol other than torch's 2 is read all the same; the warning would only repeat for each file
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as err:
            raise InputError(f"refuses to unpickle this file (weights_only): {printable_name(_torch_reason(err))}",
                             source=str(path)) from err
        except _LOAD_ERRORS as err:  # torch's messages can quote names from the file
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"cannot read PyTorch file: {printable_name(message)}", source=str(path)) from err
    return state, crcs


def _torch_reason(err: pickle.UnpicklingError) -> str:
    """What torch's weights_only unpickler objected to, without its advice to load the file unsafely."""
    paragraphs = [" ".join(p.split()) for p in str(err).split("\n\n") if p.strip()]
    kept = [p for p in paragraphs if not p.startswith(("Weights only load failed", "Check the documentation"))]
    reason = " ".join(kept or paragraphs[:1]) or type(err).__name__
    reason = reason.split("WeightsUnpickler error: ")[-1]
    return reason.split(" Please use `torch.serialization.add_safe_globals")[0]  # advice for code, not for users


# The checks before torch.load ------------------------------------------------------------------------------------

def _check_archive(path: Path) -> frozenset[tuple[int, int]]:
    """Check a zip-format torch file; the (size, CRC-32) of its storage records."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
            infos = archive.infolist()
            prefix = _archive_prefix(infos, path)
            for info in infos:
                _check_member(info, handle, size, path)
            pickled = archive.read(f"{prefix}/data.pkl")
    except _ZIP_ERRORS as err:
        raise InputError(f"corrupt zip archive: {err}", source=str(path)) from err
    records = {info.filename: info for info in infos}
    for storage in _scan(io.BytesIO(pickled), path, size).storages.values():
        record = records.get(f"{prefix}/data/{storage.key}")
        if record is None:
            raise InputError(f"data.pkl refers to storage {printable_name(storage.key)!r}, which the archive lacks",
                             source=str(path))
        if record.file_size != storage.numel * storage.itemsize:
            raise InputError(f"storage {printable_name(storage.key)!r} declares {storage.numel} elements of "
                             f"{storage.itemsize} bytes, its record holds {record.file_size} bytes", source=str(path))
    return frozenset((info.file_size, info.CRC) for name, info in records.items() if name.startswith(f"{prefix}/data/"))


def _archive_prefix(infos: list[zipfile.ZipInfo], path: Path) -> str:
    """The folder holding the records (torch takes the first member's), checked to hold data.pkl once."""
    names = [info.filename for info in infos]
    if len(set(names)) < len(names):
        raise InputError("zip archive names a member twice", source=str(path))
    prefix = names[0].split("/")[0] if names and "/" in names[0] else None
    if prefix is None or f"{prefix}/data.pkl" not in names:
        raise InputError(f"zip archive without a data.pkl beside its first member (members: {names[:5]})",
                         source=str(path))
    return prefix


def _check_member(info: zipfile.ZipInfo, handle: Any, size: int, path: Path) -> None:
    """A member must be stored uncompressed (torch maps records in place) and lie inside the file."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise InputError(f"zip member {printable_name(info.filename)!r} is compressed or has inconsistent sizes; "
                         "torch.save stores members uncompressed", source=str(path))
    handle.seek(info.header_offset)
    local = handle.read(_ZIP_LOCAL_HEADER.size)
    if len(local) < _ZIP_LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
        raise InputError(f"zip member {printable_name(info.filename)!r}: no local header at byte "
                         f"{info.header_offset}", source=str(path))
    _, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(local)
    end = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length + info.compress_size
    if end > size:
        raise InputError(f"truncated zip archive: member {printable_name(info.filename)!r} ends at byte {end}, "
                         f"the file has {size}", source=str(path))


def _check_legacy(path: Path) -> None:
    """Check a legacy torch.save file: five pickles (magic number, protocol, system info, the object, its storage
    keys), then each storage as an 8-byte element count and its data. Each count must match what the object
    declares, and the data must be present."""
    size = path.stat().st_size
    if size == 0:
        raise InputError("empty file", source=str(path))
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            if _scan(view, path, size).value != _LEGACY_MAGIC:
                raise InputError("not a torch.save file (no torch magic number at its start)", source=str(path))
            _scan(view, path, size)
            _scan(view, path, size)
            storages = _scan(view, path, size).storages
            keys = _scan(view, path, size).value
            _check_legacy_data(view, keys, storages, path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read PyTorch file: {err}", source=str(path)) from err


def _check_legacy_data(view: mmap.mmap, keys: object, storages: dict[str, _Storage], path: Path) -> None:
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        raise InputError("corrupt torch file: no list of storage keys after the pickled object", source=str(path))
    position = view.tell()
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise InputError(f"corrupt torch file: data for storage {printable_name(key)!r}, which no tensor uses",
                             source=str(path))
        count = int.from_bytes(view[position:position + 8], "little", signed=True)
        position += 8 + max(count, 0) * storage.itemsize
        if count != storage.numel or position > len(view):
            raise InputError(f"corrupt or truncated torch file: storage {printable_name(key)!r} declares "
                             f"{storage.numel} elements, its data {count} elements ending at byte {position} of "
                             f"{len(view)}", source=str(path))


class _Scan(NamedTuple):
    value: object  # the pickled value where it is a constant or a list of constants, else an _Opaque
    storages: dict[str, _Storage]


def _scan(stream: Any, path: Path, size: int) -> _Scan:
    """Walk one pickle of `stream` without running it: the storages it declares and its value if plain. Raises
    InputError for a malformed pickle, a global that is not a weights_only one, or a constructor call that would
    allocate more than the file holds."""
    walk = _PickleWalk(path, size)
    try:
        with warnings.catch_warnings():
            # a protocol-0 string with a bad escape: the pickle is refused all the same, without the warning
            warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "STOP":
                    return _Scan(walk.stack[-1], walk.storages)
                walk.step(opcode.name, arg)
    except (ValueError, IndexError, KeyError, TypeError) as err:
        raise InputError(f"corrupt pickle in PyTorch file ({_short(repr(err))})", source=str(path)) from err
    raise InputError("corrupt pickle in PyTorch file (no STOP)", source=str(path))


_CONSTANTS = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE", "SHORT_BINUNICODE",
    "BINUNICODE", "BINUNICODE8"})
_SINGLETONS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


class _PickleWalk:
    """What the opcodes of a pickle do to its stack and memo, with every call left unmade: globals are names, call
    results and dicts are _Opaque, tuples and lists of constants are kept (a persistent id, the storage keys)."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.storages: dict[str, _Storage] = {}
        self.allowed = _weights_only_globals()

    def step(self, op: str, arg: Any) -> None:
        stack = self.stack
        if op in _CONSTANTS or op in _SINGLETONS:
            stack.append(_SINGLETONS[op] if op in _SINGLETONS else arg)
        elif op == "MARK":
            self.marks.append(len(stack))
        elif op in ("GLOBAL", "STACK_GLOBAL", "INST"):
            module, _, name = arg.partition(" ") if op != "STACK_GLOBAL" else (stack.pop(-2), "", stack.pop())
            if not (isinstance(module, str) and isinstance(name, str)):
                raise TypeError("a global named by a non-string")
            stack.append(_allowed(_Global(module, name), self.allowed, self.path))
            if op == "INST":  # a protocol-0 call, named so that one of code is refused as such
                raise ValueError("opcode INST, which torch.save does not write")
        elif op in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
            if op == "NEWOBJ_EX":
                stack.pop()  # keyword arguments
            args, func = stack.pop(), stack.pop()
            _check_call(func, args, self.path, self.size)
            stack.append(_Opaque())
        elif op == "BINPERSID":
            _declare(stack.pop(), self.storages)
            stack.append(_Opaque())
        elif op in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            self.memo[len(self.memo) if op == "MEMOIZE" else arg] = stack[-1]
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo[arg])
        elif op not in ("PROTO", "FRAME"):
            self.containers(op)

    def containers(self, op: str) -> None:
        stack = self.stack
        if op in ("TUPLE", "LIST"):
            items = self.pop_mark()
            stack.append(tuple(items) if op == "TUPLE" else items)
        elif op in ("TUPLE1", "TUPLE2", "TUPLE3", "SETITEM", "BUILD", "POP", "DUP"):
            n = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "SETITEM": 2}.get(op, 1)
            if len(stack) < n + (op == "SETITEM"):
                raise IndexError(f"{op} on a stack of {len(stack)}")
            items = tuple(stack[-n:])
            if op == "DUP":
                stack.append(items[0])
            else:
                del stack[-n:]
            if op.startswith("TUPLE"):
                stack.append(items)
        elif op in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            stack.append({"EMPTY_TUPLE": (), "EMPTY_LIST": []}.get(op, _Opaque()))
        elif op in ("DICT", "FROZENSET", "SETITEMS", "ADDITEMS", "POP_MARK"):
            self.pop_mark()
            if op in ("DICT", "FROZENSET"):
                stack.append(_Opaque())
        elif op in ("APPEND", "APPENDS"):
            items = [stack.pop()] if op == "APPEND" else self.pop_mark()
            if isinstance(stack[-1], list):
                stack[-1].extend(items)
        else:  # OBJ, PERSID (protocols 0 and 1), EXT1/2/4 (the copyreg registry), out-of-band buffers
            raise ValueError(f"opcode {op}, which torch.save does not write")

    def pop_mark(self) -> list[Any]:
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items


def _allowed(func: _Global, allowed: frozenset[str] | None, path: Path) -> _Global:
    """The global, if torch.load(weights_only=True) accepts it; else an InputError that names it."""
    module, name = NAME_MAPPING.get((func.module, func.name), (IMPORT_MAPPING.get(func.module, func.module),
                                                               func.name))
    if allowed is None or f"{module}.{name}" in allowed:
        return func
    raise InputError(f"refuses to unpickle {printable_name(str(func))} (weights_only): loading it could run code; "
                     "hteval loads tensors and plain containers only", source=str(path))


def _weights_only_globals() -> frozenset[str] | None:
    """The globals torch.load(weights_only=True) accepts, as torch's get_unsafe_globals_in_checkpoint reads them;
    None where this torch does not expose them (torch.load then judges alone)."""
    unpickler = getattr(sys.modules["torch"], "_weights_only_unpickler", None)
    try:
        return frozenset(unpickler._get_allowed_globals()) | frozenset(unpickler._get_user_allowed_globals())
    except AttributeError:
        return None


def _check_call(func: object, args: Any, path: Path, size: int) -> None:
    """Refuse a call that would allocate what the file only declares: a tensor or storage constructor (torch.save
    never writes one), a bytearray or quantized tensor larger than the file could fill."""
    if not isinstance(func, _Global):
        raise TypeError(f"a call of {type(func).__name__}, not of a global")
    if func.module.startswith("torch") and func.name.endswith(("Tensor", "Storage")):
        raise InputError(f"corrupt or hostile PyTorch file: it calls {func}, a constructor that allocates memory "
                         "and that torch.save never writes", source=str(path))
    if func.name == "bytearray" and type(args[0]) is int:
        elements = args[0]
    elif func.name == "_rebuild_qtensor":
        shape = args[2]
        plain = isinstance(shape, tuple) and len(shape) <= 64 and all(type(n) is int for n in shape)
        elements = math.prod(shape) if plain else None
    else:
        return
    if elements is None or elements > 8 * size:  # 8: a tensor of one bit per element still fits
        raise InputError(f"corrupt or hostile PyTorch file: {func} would allocate {elements or 'unknown'} elements "
                         f"in a file of {size} bytes", source=str(path))


def _declare(pid: object, storages: dict[str, _Storage]) -> None:
    """Record a storage persistent id: ('storage', storage type, key, location, numel[, view])."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
        raise TypeError("a persistent id that is not a storage")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not (isinstance(storage_type, _Global) and isinstance(key, str) and type(numel) is int and numel >= 0):
        raise TypeError("a malformed storage persistent id")
    storages.setdefault(key, _Storage(key, _itemsize(storage_type), numel))


def _itemsize(storage_type: _Global) -> int:
    torch = sys.modules["torch"]
    if storage_type.name == "UntypedStorage":
        return 1
    try:
        dtype = torch.serialization.StorageType(storage_type.name).dtype
    except KeyError as err:
        raise TypeError(f"unknown storage type {storage_type}") from err
    return torch.empty(0, dtype=dtype).element_size()


# The loaded state dict -------------------------------------------------------------------------------------------

def _unwrap(obj: Any) -> Any:
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            logger.debug("reading the state dict nested under %r", key)
            return obj[key]
    return obj


def _flatten(torch: Any, obj: Any, prefix: str, path: Path, depth: int = 0,
             seen: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        yield prefix.removesuffix("."), obj
    elif isinstance(obj, Mapping):
        if id(obj) in seen:  # a pickle can hold one dict under two keys, or inside itself
            logger.debug("mapping at %r was read already under another name", prefix)
            return
        if depth > _MAX_DEPTH:
            raise InputError(f"state dict nested more than {_MAX_DEPTH} levels deep (at {_short(prefix)!r})",
                             source=str(path))
        seen.add(id(obj))
        for key, value in obj.items():
            yield from _flatten(torch, value, f"{prefix}{key}.", path, depth + 1, seen)
    else:
        logger.debug("ignoring non-tensor entry %r of type %s", prefix, type(obj).__name__)


def _record(torch: Any, name: str, tensor: Any, path: Path, crcs: frozenset[tuple[int, int]] | None,
            checked: dict[int, bool]) -> NamedTensor | SkippedTensor:
    """The tensor as a NamedTensor, or why it cannot be read."""
    shape, dtype_name = tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")
    if tensor.device.type == "meta":
        return SkippedTensor(name, shape, dtype_name, "on the meta device: no values to read")
    try:
        problem = _tensor_problem(torch, tensor)
        if problem is None and crcs is not None and not _crc_matches(torch, tensor, crcs, checked):
            problem = "its storage record fails its CRC-32 check (the file is corrupt)"
        if problem is None:
            return NamedTensor(name, tensor_to_numpy(tensor), dtype_name)
    except (TypeError, RuntimeError, ValueError) as err:
        problem = f"cannot convert tensor to numpy ({err})"
    return unreadable(name, problem, str(path), shape=shape, dtype=_numpy_dtype(torch, tensor.dtype),
                      dtype_name=dtype_name)


def _tensor_problem(torch: Any, tensor: Any) -> str | None:
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return f"tensor subclass {type(tensor).__name__}; hteval reads plain tensors"
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        kind = "quantized" if tensor.is_quantized else "nested" if tensor.is_nested else tensor.layout
        return f"{kind} tensor; hteval reads dense tensors"
    held = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
    if tensor.numel() > held:
        return (f"shape {list(tensor.shape)} with strides {list(tensor.stride())} views {tensor.numel()} elements "
                f"of a storage of {held}")
    return None


def _crc_matches(torch: Any, tensor: Any, crcs: frozenset[tuple[int, int]], checked: dict[int, bool]) -> bool:
    """Whether the tensor's storage has the size and CRC-32 of one of the archive's storage records (each storage
    is checked once, when the first tensor on it is read)."""
    storage = tensor.untyped_storage()
    if storage.data_ptr() not in checked:
        data = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,)).numpy()
        checked[storage.data_ptr()] = (storage.nbytes(), zlib.crc32(data)) in crcs
    return checked[storage.data_ptr()]


def _numpy_dtype(torch: Any, dtype: Any) -> np.dtype | None:
    try:
        return tensor_to_numpy(torch.empty(0, dtype=dtype)).dtype
    except (TypeError, RuntimeError):
        return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
