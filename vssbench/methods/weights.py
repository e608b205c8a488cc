"""Weights into a vssbench method from any format of the field: read safely, detect, convert, check, load, record.

``load_weights(method, path)`` is what ``--checkpoint`` and ``bench train --init`` do:

1. :func:`read_source` reads a file or a Hugging Face model directory without running code
   from it: safetensors, ``torch.load(weights_only=True)`` (classes a checkpoint pickles for
   its own bookkeeping, such as mmengine's message hub, are read as inert placeholders), and
   plain pickles of NumPy arrays (detectron2's ``.pkl``) through an unpickler that builds
   arrays and containers only.
2. :func:`detect_format` names the format from the keys (:data:`FORMATS`).
3. The key map of that format, which lives next to the model it fills (the model files'
   ``from_*`` functions), turns the tensors into the target module's portable names; the
   source's numerical conventions (a layer-norm epsilon, a flow scale) come along.
4. The tensors are checked against the target (a Hugging Face config against the preset;
   every missing, unexpected or mis-shaped tensor is an error naming it) and loaded.
5. A :class:`LoadRecord` says what happened: keys mapped, dropped (each reason once), missing,
   notes, and the file's format and sha256. Result rows carry these records.

Portable names: vssbench checkpoints store Hugging Face submodules under their on-disk (hub)
names, which do not change with the transformers version; transformers 5 renames many of them
in memory (``attention.self.query`` -> ``attention.q_proj``). The bijection between the two is
derived from transformers itself (:func:`portable_names`), so a hub file, a bare weights file
saved from memory, and a vssbench checkpoint all load into the same model.

What a method is made of (``VideoMethod.weight_components``) decides where weights go:
``segmentor``, ``backbone`` (the segmentor's ImageNet feature extractor), ``flow`` (the
FlowNetS or motion encoder), and for Accel ``reference`` and ``update``. ``--init
COMPONENT=PATH`` names one; otherwise the format's kind decides.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import math
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vssbench.files import atomic_path
from vssbench.limits import (
    check_class_count,
    check_depth,
    check_inside,
    check_regular_file,
    limit,
    override_hint,
    plain_name,
    read_json,
    tensor_bytes_allowed,
)
from vssbench.methods.keymap import Converted, strip_prefix

log = logging.getLogger("vssbench")

CHECKPOINT_FORMAT = "vssbench-checkpoint/2"
LEGACY_CHECKPOINT_FORMAT = "vssbench-checkpoint/1"  # in-memory key names of the transformers that wrote it
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
# Buffers a module builds deterministically: a source that lacks them loses nothing.
DERIVED_BUFFERS = re.compile(r"(num_batches_tracked|relative_position_index|position_ids)$")


class CheckpointError(ValueError):
    """Weights that cannot be read, are of no known format, or do not fit the method: the message names
    the file and what was expected."""


# --------------------------------------------------------------------------- reading


@dataclass
class SourceFile:
    """What was read: the tensors under their source names, a Hugging Face config if any, and the rest.

    ``files`` names every file read (a folder's config and shards included) with the sha256 vssbench
    computed; ``payload`` is a vssbench checkpoint's whole object, checked (:func:`_check_payload`)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    config: dict | None = None  # config.json of a Hugging Face directory
    info: dict = field(default_factory=dict)  # top-level entries that are not weights (div_flow, meta, ...)
    payload: dict | None = None  # the whole object of a vssbench checkpoint
    sha256: str = ""
    files: list[dict] = field(default_factory=list)  # {"file", "sha256"} of each file read


def read_source(path: str | Path) -> SourceFile:
    """Read weights from ``path`` (a file, or a Hugging Face model directory) without executing code,
    within the limits of :mod:`vssbench.limits`: only regular files, no tensor claiming more bytes than
    its file holds, nothing nested deeper than ``MAX_DEPTH``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights {path} do not exist")
    pair = _dcfm_pair(path)
    if pair is not None:
        return _read_dcfm_pair(*pair)
    if path.is_dir():
        return _read_hf_directory(path)
    check_regular_file(path, "weights", CheckpointError)
    tensors_or_object = _read_file(path)
    source = SourceFile(path, {}, sha256=file_sha256(path))
    source.files = [{"file": str(path), "sha256": source.sha256}]
    if isinstance(tensors_or_object, dict) and tensors_or_object.get("format") in (CHECKPOINT_FORMAT,
                                                                                   LEGACY_CHECKPOINT_FORMAT):
        source.payload = _check_payload(tensors_or_object, path)
        source.tensors = dict(source.payload["state_dict"])
        return source
    source.tensors, source.info = _unwrap(tensors_or_object, path)
    return source


_DCFM_FILE = re.compile(r"^(encoder|decoder)_epoch_(\d+)\.pth$")


def _dcfm_pair(path: Path) -> tuple[Path, Path] | None:
    """DCFM's released weights are two files of one iteration, ``encoder_epoch_N.pth`` and
    ``decoder_epoch_N.pth`` (``tools/utils.py`` ``load_ckpt``): ``path`` names either file, or a folder (its
    ``logs/``, or itself) holding one iteration's pair. None when ``path`` is neither."""
    if path.is_file():
        match = _DCFM_FILE.match(path.name)
        if match is None:
            return None
        pair = tuple(path.with_name(f"{part}_epoch_{match[2]}.pth") for part in ("encoder", "decoder"))
        missing = [p for p in pair if not p.is_file()]
        if missing:
            raise CheckpointError(f"{path} is one of DCFM's two weight files; expected {missing[0]} beside it")
        return pair
    folder = path / "logs" if (path / "logs").is_dir() and not (path / "config.json").exists() else path
    if not folder.is_dir() or (folder / "config.json").exists():
        return None
    found: dict[str, dict[str, Path]] = {}
    for file in folder.iterdir():
        match = _DCFM_FILE.match(file.name)
        if match:
            found.setdefault(match[2], {})[match[1]] = file
    if not found:
        return None
    complete = [iteration for iteration, parts in found.items() if len(parts) == 2]
    if len(complete) != 1:
        raise CheckpointError(f"{folder} holds DCFM weights of iterations {sorted(found, key=int)} "
                              f"({len(complete) or 'none'} with both files); expected one pair, or name one file: "
                              "FOLDER/encoder_epoch_N.pth")
    return found[complete[0]]["encoder"], found[complete[0]]["decoder"]


def _read_dcfm_pair(encoder: Path, decoder: Path) -> SourceFile:
    """Both files' tensors as ``encoder.*`` and ``decoder.*``, DistributedDataParallel's ``module.`` removed."""
    tensors, read = {}, []
    for part, file in (("encoder", encoder), ("decoder", decoder)):
        check_regular_file(file, "weights", CheckpointError)
        state, _ = _unwrap(_read_file(file), file)
        tensors.update({f"{part}.{k[len('module.'):] if k.startswith('module.') else k}": v for k, v in state.items()})
        read.append({"file": str(file), "sha256": file_sha256(file)})
    return SourceFile(encoder.parent, tensors, sha256=_folder_digest(read), files=read)


def _read_file(path: Path) -> object:
    """The object a weights file holds, its NumPy arrays built safely, checked against the file's size."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"PK\x03\x04":  # torch's zip format
        _check_archive(path)
        obj = _torch_load(path, zipped=True)
    elif len(head) >= 9 and head[8:9] == b"{":  # safetensors: a little-endian header size, then JSON
        obj = _read_safetensors(path)
    elif head[:3] == b"\x80\x02\x8a":  # torch's legacy format: a pickle that starts with its magic number
        obj = _torch_load(path, zipped=False)
    elif head[:1] == b"\x80":  # a plain pickle (detectron2's .pkl)
        obj = _read_plain_pickle(path)
    else:
        raise CheckpointError(f"cannot read {path}: not a safetensors, PyTorch or pickle file; expected model "
                              "weights (.safetensors, .pth/.pt/.bin/.pth.tar, detectron2 .pkl) or a Hugging Face "
                              "model folder")
    return _settle(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:  # safetensors checks that its header's offsets cover the file exactly, without overlap
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read {path} as safetensors ({error}); the file may be truncated") from None


def _check_archive(path: Path) -> None:
    """A torch zip archive whose entries would decompress to more than its tensors may claim is refused
    before anything is decompressed (torch.save writes entries uncompressed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path} as a PyTorch file ({error}); the file may be truncated") from None
    allowed = tensor_bytes_allowed(path.stat().st_size)
    if declared > allowed:
        raise CheckpointError(f"{path}: its archive entries decompress to {declared:,} bytes from a "
                              f"{path.stat().st_size:,}-byte file (more than {allowed:,}); vssbench refuses "
                              "compressed archives of that ratio (a zip bomb)")


class _Opaque:
    """Stands in for a class a checkpoint pickles for bookkeeping (an optimizer's or logger's state);
    it records nothing and runs nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


# --- NumPy, rebuilt safely. NumPy's own rebuild (``_reconstruct`` then ``ndarray.__setstate__``) trusts
# the pickle: an object array whose list is shorter than its shape reads past the list (a segfault).
# These stand-ins build only numeric and string arrays, from bytes whose length matches the shape.
_ARRAY_KINDS = "biufcSU"  # bool, integers, floats, complex, byte and unicode strings: no objects, no records


class _PendingDtype:
    """A dtype a pickle builds (``numpy.dtype(spec, align, copy)``, then its state), checked as it comes."""

    def __init__(self, spec: object = None, align: object = False, copy: object = False) -> None:
        try:
            dtype = np.dtype(spec) if isinstance(spec, str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype:
            raise pickle.UnpicklingError(f"a NumPy dtype {spec!r} (object and record arrays are refused)")
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or any(part not in (None, -1, 0) for part in state[2:5]):
            raise pickle.UnpicklingError("a NumPy dtype with fields or sub-arrays: vssbench reads plain arrays only")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _resolved_dtype(dtype: object) -> np.dtype:
    if not isinstance(dtype, _PendingDtype):
        raise pickle.UnpicklingError(f"an array whose dtype is a {type(dtype).__name__}")
    return dtype.dtype


def _array_from_bytes(data: object, dtype: np.dtype, shape: object, fortran: bool) -> np.ndarray:
    if isinstance(data, str):  # a Python 2 pickle read with encoding="latin1" (detectron2's older .pkl)
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise pickle.UnpicklingError("an array whose data are not bytes (an object array)")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"an array of shape {shape!r}")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data):
        raise pickle.UnpicklingError(f"an array of shape {shape} ({count * dtype.itemsize} bytes) "
                                     f"with {len(data)} bytes of data")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")


class _PendingArray:
    """What ``numpy._core.multiarray._reconstruct`` returns here; ``__setstate__`` builds the array."""

    def __init__(self, *args: object) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array with a malformed state")
        shape, dtype, fortran, data = state[-4:]
        self.array = _array_from_bytes(data, _resolved_dtype(dtype), shape, bool(fortran))


def _frombuffer(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """``numpy._core.numeric._frombuffer`` (pickle protocol 5), checked the same way."""
    return _array_from_bytes(data, _resolved_dtype(dtype), shape, order == "F")


def _scalar(dtype: object, data: object = b"") -> np.generic:
    """``numpy._core.multiarray.scalar``: a numeric scalar from exactly its bytes."""
    return _array_from_bytes(data, _resolved_dtype(dtype), (), False)[()]


def _latin1_encode(text: object, encoding: object = "utf-8") -> bytes:
    """``_codecs.encode``, as pickle protocol 2 writes bytes from Python 3: Latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode other than of text to Latin-1 bytes")
    return text.encode("latin1")


# What NumPy 1 and 2 pickles name to rebuild arrays, each bound to its checked stand-in.
_NUMPY_GLOBALS = {
    **{(module, "_reconstruct"): _PendingArray for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,  # only ever an argument of _reconstruct, which ignores it
    ("numpy", "dtype"): _PendingDtype,
}
_PENDING = (_PendingArray, _PendingDtype)


def _torch_load(path: Path, zipped: bool) -> object:
    """``torch.load(weights_only=True)`` with the NumPy stand-ins above; classes it refuses that are not
    torch's become :class:`_Opaque`, and any function it refuses is an error. A zip archive names what it
    pickles up front; a legacy file is retried with each class it refuses (it is read once)."""
    stand_ins: list = [(value, f"{module}.{name}") for (module, name), value in _NUMPY_GLOBALS.items()]
    stand_ins += [(cls, f"vssbench.methods.weights.{cls.__name__}") for cls in _PENDING]
    source: Path | io.BytesIO = path
    if zipped:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as error:  # noqa: BLE001 - torch raises several types for damaged files
            raise CheckpointError(f"cannot read {path} as a PyTorch file ({type(error).__name__}); the file may be "
                                  "truncated or not a checkpoint") from None
        known = {name for _, name in stand_ins}
        stand_ins += [(_stand_in(name, path), name) for name in names if name not in known]
    else:
        source = io.BytesIO(path.read_bytes())
    for _ in range(32):
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            match = re.search(r"GLOBAL ([\w.]+)", str(error))
            if zipped or not match:
                raise CheckpointError(f"cannot read {path}: {str(error).splitlines()[-1] or error}") from None
            stand_ins.append((_stand_in(match.group(1), path), match.group(1)))
        except Exception as error:  # noqa: BLE001 - torch raises several types for damaged files
            first_line = str(error).splitlines()[0] if str(error) else ""
            raise CheckpointError(f"cannot read {path} as a PyTorch file ({type(error).__name__}: {first_line}); "
                                  "the file may be truncated or not a checkpoint") from None
    raise CheckpointError(f"cannot read {path}: too many unknown classes pickled in it")


def _stand_in(name: str, path: Path) -> type:
    """:class:`_Opaque` for a bookkeeping class (capitalised, not torch's); any other global is refused."""
    if name.startswith("torch.") or not name.rsplit(".", 1)[-1][:1].isupper():
        raise CheckpointError(f"cannot read {path}: it pickles {name}, which vssbench will not unpickle (only "
                              "tensors, numeric arrays and plain containers are read)")
    return _Opaque


def _storage_from_bytes(data: bytes) -> object:
    """A tensor storage a plain pickle embeds as ``torch.save`` bytes, read with ``weights_only``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# What a plain pickle of tensors (Mask2Former's Swin .pkl) refers to, each safe: they build tensors only.
_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numeric NumPy arrays, tensors and plain containers, and refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        found = _NUMPY_GLOBALS.get((module, name)) or _TORCH_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"global {module}.{name}, which vssbench will not unpickle")
        return found


def _read_plain_pickle(path: Path) -> object:
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"cannot read {path}: the pickle holds {error}; vssbench reads pickles of numeric "
                              "NumPy arrays, tensors and plain containers (detectron2's .pkl)") from None
    except RecursionError:
        raise CheckpointError(f"cannot read {path}: the pickle is nested too deeply") from None
    except Exception as error:  # noqa: BLE001 - damaged pickles raise many types
        raise CheckpointError(f"cannot read {path} as a pickle ({type(error).__name__}); the file may be truncated "
                              "or not a checkpoint") from None


def _settle(obj: object, path: Path) -> object:
    """The object read, with its NumPy stand-ins replaced by the arrays they built, refused if it nests
    deeper than ``MAX_DEPTH`` or if its tensors and arrays claim more bytes than the file can hold (one
    storage under many keys, or a zero-stride view, would become copies as large as the claim)."""
    check_depth(obj, f"the object in {path}", CheckpointError)
    claimed = 0

    def settled(value: object) -> object:
        nonlocal claimed
        if isinstance(value, _PendingArray):
            if value.array is None:
                raise CheckpointError(f"cannot read {path}: an array without its data")
            value = value.array
        elif isinstance(value, _PendingDtype):
            return value.dtype
        if isinstance(value, torch.Tensor):
            claimed += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            claimed += value.nbytes
        elif isinstance(value, dict):
            items = [(key, settled(item)) for key, item in value.items()]
            value.clear()
            value.update(items)
        elif isinstance(value, list):
            value[:] = [settled(item) for item in value]
        elif isinstance(value, tuple):
            value = tuple(settled(item) for item in value)
        return value

    obj = settled(obj)
    size = path.stat().st_size
    if claimed > tensor_bytes_allowed(size):
        raise CheckpointError(f"{path}: its tensors claim {claimed:,} bytes from a {size:,}-byte file (repeated "
                              "or zero-stride references); vssbench refuses what would allocate more than twice "
                              "what the file holds")
    return obj


def _check_payload(payload: dict, path: Path) -> dict:
    """A vssbench checkpoint's header, checked before anything trusts it: a state dict of tensors, names
    that are strings, a class count within the limit, and records that are plain, small JSON."""
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in state.items()):
        raise CheckpointError(f"{path}: a vssbench checkpoint header without a state_dict of named tensors")
    for name in ("method", "preset", "variant"):
        if not isinstance(payload.get(name), str):
            raise CheckpointError(f"{path}: its {name} is {payload.get(name)!r}; expected a name")
    check_class_count(payload.get("num_classes"), str(path), CheckpointError)
    for name in ("revisions", "conventions", "metadata"):
        if not isinstance(payload.get(name) or {}, dict):
            raise CheckpointError(f"{path}: its {name} is a {type(payload[name]).__name__}; expected a dictionary")
    try:
        text = json.dumps(payload.get("metadata") or {}, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: its metadata is not a plain record ({error})") from None
    if len(text) > limit("MAX_METADATA_BYTES"):
        raise CheckpointError(f"{path}: its metadata is {len(text):,} bytes as JSON, more than the "
                              f"{limit('MAX_METADATA_BYTES'):,} allowed ({override_hint('MAX_METADATA_BYTES')})")
    return payload


def _unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict inside a checkpoint object and its other top-level entries."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dictionary of weights")
    inner = obj
    for key in ("state_dict", "model", "module"):
        if isinstance(inner.get(key), dict):
            inner = inner[key]
            break
    info = {k: v for k, v in obj.items() if inner is not obj and not isinstance(v, dict)}
    tensors = {}
    for key, value in inner.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "SU":
                continue
            value = torch.from_numpy(value if value.flags.c_contiguous and value.flags.writeable else value.copy())
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; expected model weights")
    return tensors, info


def _read_hf_directory(path: Path) -> SourceFile:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} is a folder without config.json; expected a Hugging Face model folder "
                              f"(config.json and one of {', '.join(HF_WEIGHT_FILES)})")
    config = read_json(config_file, "Hugging Face config", CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} holds a {type(config).__name__}; expected a JSON object")
    files = _hf_weight_files(path)
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        check_regular_file(file, "weights", CheckpointError)
        part = _read_file(file)
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise CheckpointError(f"{file} holds a {type(part).__name__}, not a dictionary of tensors")
        tensors.update(part)
    read = [{"file": str(file), "sha256": file_sha256(file)} for file in [config_file, *files]]
    return SourceFile(path, tensors, config=config, sha256=_folder_digest(read), files=read)


def _folder_digest(files: list[dict]) -> str:
    """A Hugging Face folder's sha256: of its files' names and digests, config first."""
    digest = hashlib.sha256()
    for entry in files:
        digest.update(f"{Path(entry['file']).name}:{entry['sha256']}\n".encode())
    return digest.hexdigest()


def _hf_weight_files(path: Path) -> list[Path]:
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            return _shards(path, path / index)
    raise CheckpointError(f"{path} has config.json but no weights; expected one of {', '.join(HF_WEIGHT_FILES)}")


def _shards(folder: Path, index: Path) -> list[Path]:
    """The shard files a ``*.index.json`` names: each a file of ``folder`` itself (no ``/``, no ``..``, no
    link out of it)."""
    weight_map = (read_json(index, "shard index", CheckpointError) or {})
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"the shard index {index}: expected a weight_map object of tensor name -> shard file")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        plain_name(shard, f"the shard index {index}", CheckpointError)
        if (folder / shard).exists():
            check_inside(folder, folder / shard, f"the shard index {index}", CheckpointError)
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise CheckpointError(f"{index} lists shards that are not there: {', '.join(missing)}")
    return [folder / s for s in shards]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class WeightFormat:
    """A weight format of the field: how to recognise it and what it holds."""

    name: str
    title: str
    kind: str  # "method" (vssbench), "video" (a published video method), "segmentor", "backbone" or "flow"
    detect: Callable[[dict[str, torch.Tensor]], bool]


def _has(*patterns: str) -> Callable[[dict[str, torch.Tensor]], bool]:
    compiled = [re.compile(p) for p in patterns]
    return lambda tensors: all(any(p.search(k) for k in tensors) for p in compiled)


def _has_not(detect: Callable, *patterns: str) -> Callable[[dict[str, torch.Tensor]], bool]:
    compiled = [re.compile(p) for p in patterns]
    return lambda tensors: detect(tensors) and not any(p.search(k) for k in tensors for p in compiled)


FORMATS = (
    WeightFormat("hf-segformer", "Hugging Face SegFormer (SegformerForSemanticSegmentation)", "segmentor",
                 _has(r"^segformer\.", r"^decode_head\.(linear_c|linear_projections)\.")),
    WeightFormat("hf-mask2former", "Hugging Face Mask2Former (Mask2FormerForUniversalSegmentation)", "segmentor",
                 _has(r"^model\.pixel_level_module\.", r"^class_predictor\.")),
    WeightFormat("cffm", "GuoleiSun/VSS-CFFM CFFM (EncoderDecoder_clips, CFFMHead_clips_resize1_8)", "video",
                 _has(r"^decode_head\.decoder_focal\.", r"^backbone\.block1\.0\.attn\.kv\.")),
    WeightFormat("mrcfa", "GuoleiSun/VSS-MRCFA MRCFA (EncoderDecoder_clips, hypercorrelation head)", "video",
                 _has(r"^decode_head\.hypercorre_module\.", r"^backbone\.block1\.0\.attn\.kv\.")),
    WeightFormat("dcfm", "BUAAHugeGun/DCFM DCFM (logs/encoder_epoch_N.pth and decoder_epoch_N.pth)", "video",
                 _has(r"^encoder\.backbone\.(encoder\.block1\.0\.attn\.kv|layer1\.0\.conv1)\.",
                      r"^decoder\.ffm\.convblk\.")),
    WeightFormat("nvlabs-segformer", "NVlabs / CFFM / MRCFA SegFormer (mmseg 0.x)", "segmentor",
                 _has(r"^backbone\.block1\.0\.attn\.kv\.", r"^decode_head\.linear_c4\.")),
    WeightFormat("mmseg-segformer", "mmsegmentation 1.x SegFormer", "segmentor",
                 _has(r"^backbone\.layers\.0\.1\.0\.attn\.attn\.in_proj_weight$", r"^decode_head\.fusion_conv\.")),
    WeightFormat("mmseg-pspnet", "mmsegmentation PSPNet (ResNetV1c)", "segmentor",
                 _has(r"^backbone\.stem\.0\.weight$", r"^decode_head\.psp_modules\.")),
    WeightFormat("detectron2-mask2former", "detectron2 Mask2Former (facebookresearch/Mask2Former, ziplab/MPVSS)",
                 "segmentor", _has(r"^sem_seg_head\.predictor\.query_feat\.weight$")),
    WeightFormat("flownetpytorch", "FlowNetS of FlowNetPytorch (flownets*.pth.tar)", "flow",
                 _has(r"^conv3_1\.0\.weight$", r"^predict_flow6\.weight$")),
    WeightFormat("mmtracking-flownet", "mmtracking FlowNetSimple (flownet_simple.pth, MPVSS's motion encoder)",
                 "flow", _has(r"(^|\.)conv3\.1\.conv\.weight$", r"(^|\.)conv6\.0\.conv\.weight$")),
    WeightFormat("raft", "princeton-vl RAFT (raft-things.pth etc.)", "flow",
                 _has(r"^(module\.)?fnet\.conv1\.weight$", r"^(module\.)?update_block\.encoder\.convc1\.weight$")),
    WeightFormat("torchvision-raft", "torchvision RAFT (raft_large_*.pth, raft_small_*.pth)", "flow",
                 _has(r"^feature_encoder\.convnormrelu\.0\.weight$", r"^update_block\.motion_encoder\.")),
    WeightFormat("hf-mit", "Hugging Face MiT (SegformerForImageClassification / SegformerModel)", "backbone",
                 _has_not(_has(r"^(segformer\.)?encoder\.(block|patch_embeddings)\.|^(segformer\.)?stages\."),
                          r"^decode_head\.")),
    WeightFormat("hf-swin", "Hugging Face Swin (SwinForImageClassification / SwinModel)", "backbone",
                 _has(r"^(swin\.)?embeddings\.patch_embeddings\.", r"^(swin\.)?encoder\.layers\.0\.blocks\.")),
    WeightFormat("hf-resnet", "Hugging Face ResNet (ResNetForImageClassification / ResNetModel)", "backbone",
                 _has(r"^(resnet\.)?embedder\.embedder\.convolution\.weight$")),
    WeightFormat("nvlabs-mit", "NVlabs MiT ImageNet checkpoint (mit_b*.pth)", "backbone",
                 _has(r"^block1\.0\.attn\.kv\.weight$", r"^patch_embed1\.proj\.weight$")),
    WeightFormat("mmseg-mit", "mmsegmentation MiT ImageNet checkpoint (mit_b*_*.pth)", "backbone",
                 _has(r"^layers\.0\.1\.0\.attn\.attn\.in_proj_weight$")),
    WeightFormat("official-swin", "Swin Transformer ImageNet checkpoint (microsoft/Swin-Transformer)", "backbone",
                 _has(r"^patch_embed\.proj\.weight$", r"^layers\.0\.blocks\.0\.attn\.qkv\.weight$")),
    WeightFormat("detectron2-resnet", "detectron2 ResNet ImageNet checkpoint (R-50.pkl from torchvision)", "backbone",
                 _has(r"^stem\.conv1\.weight$", r"^res2\.0\.conv1\.weight$")),
    WeightFormat("resnet-v1c", "mmseg/mmcls ResNetV1c ImageNet checkpoint (resnet*_v1c)", "backbone",
                 _has(r"^(backbone\.)?stem\.0\.weight$", r"^(backbone\.)?layer1\.0\.conv1\.weight$")),
    WeightFormat("torchvision-resnet", "torchvision-format ResNet state dict", "backbone",
                 _has(r"^conv1\.weight$", r"^bn1\.weight$", r"^layer1\.0\.conv1\.weight$")),
)
VSSBENCH_FORMAT = WeightFormat("vssbench", "vssbench checkpoint", "method", lambda tensors: False)


def detect_format(source: SourceFile) -> WeightFormat:
    """The format of what was read, from its keys (and, for vssbench checkpoints, its header)."""
    if source.payload is not None:
        return VSSBENCH_FORMAT
    for candidate in FORMATS:
        if candidate.detect(source.tensors):
            return candidate
    sample = ", ".join(list(source.tensors)[:5])
    raise CheckpointError(f"{source.path}: weights of no format vssbench knows (first keys: {sample}); expected one "
                          f"of: vssbench checkpoint, {'; '.join(f.title for f in FORMATS)}")


# --------------------------------------------------------------------------- portable names


def portable_names(module: nn.Module) -> dict[str, str]:
    """Every state-dict key of ``module`` -> its portable name: a Hugging Face submodule's keys under its
    on-disk (hub) names, derived from transformers' own save-time renaming; every other key as it is."""
    from transformers import PreTrainedModel

    state = module.state_dict(keep_vars=True)
    mapping = {key: key for key in state}
    for prefix, submodule in _outermost_pretrained(module, PreTrainedModel):
        local = {key[len(prefix):]: tensor for key, tensor in state.items() if key.startswith(prefix)}
        on_disk = _hub_names(submodule, local)
        mapping.update({prefix + memory: prefix + disk for memory, disk in on_disk.items()})
    return mapping


def _outermost_pretrained(module: nn.Module, base: type) -> list[tuple[str, nn.Module]]:
    found: list[tuple[str, nn.Module]] = []
    for name, child in module.named_modules():
        if isinstance(child, base) and not any(name.startswith(prefix) for prefix, _ in found):
            found.append((f"{name}." if name else "", child))
    return found


def _hub_names(model: nn.Module, local: dict[str, torch.Tensor]) -> dict[str, str]:
    """In-memory key -> hub key of one Hugging Face model, by transformers' ``revert_weight_conversion``
    on tensors tagged with their index (a renaming keeps each tensor as it is)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # a transformers without load-time renaming: memory and disk names are the same
        return {key: key for key in local}
    keys = list(local)
    tagged = {key: torch.tensor([float(i)]) for i, key in enumerate(keys)}
    reverted = revert_weight_conversion(model, dict(tagged))
    if len(reverted) != len(keys):
        raise RuntimeError(f"transformers' renaming of {type(model).__name__} merged or split tensors; vssbench "
                           "expects a one-to-one renaming")
    return {keys[int(tensor.item())]: disk for disk, tensor in reverted.items()}


def to_portable(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = portable_names(module)
    return {names.get(key, key): tensor for key, tensor in state.items()}


def from_portable(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Portable (or in-memory) names -> ``module``'s in-memory names; keys it does not know stay as they are."""
    memory = {disk: key for key, disk in portable_names(module).items()}
    return {memory.get(key, key): tensor for key, tensor in state.items()}


# --------------------------------------------------------------------------- converting


def _hugging_face(source: SourceFile) -> Converted:
    """A Hugging Face model's tensors (hub or in-memory names): the segmentor holds the model as ``model``."""
    return Converted({f"model.{k}": v for k, v in source.tensors.items()})


def _segmentor_converters() -> dict[str, tuple[type, Callable[[SourceFile], Converted]]]:
    """Segmentor format -> (the segmentor class it fills, its key map)."""
    from vssbench.methods.segmentors import Mask2Former, PSPNet, SegFormer, mask2former, pspnet, segformer

    return {
        "hf-segformer": (SegFormer, _hugging_face),
        "hf-mask2former": (Mask2Former, _hugging_face),
        "nvlabs-segformer": (SegFormer, lambda source: segformer.from_nvlabs(source.tensors)),
        "mmseg-segformer": (SegFormer, lambda source: segformer.from_mmseg(source.tensors)),
        "mmseg-pspnet": (PSPNet, lambda source: pspnet.from_mmseg(source.tensors)),
        "detectron2-mask2former": (Mask2Former, lambda source: mask2former.from_detectron2(source.tensors)),
    }


def _video_converters() -> dict[str, tuple[type, Callable[[SourceFile], Converted], str]]:
    """Video-method format -> (the method class it fills whole, its key map, the segmentor format of its
    per-frame branch, which any other method with that segmentor takes)."""
    from vssbench.methods import cffm, dcfm, mrcfa

    return {"cffm": (cffm.CFFM, lambda source: cffm.from_official(source.tensors), "nvlabs-segformer"),
            "dcfm": (dcfm.DCFM, lambda source: dcfm.from_official(source.tensors), "nvlabs-segformer"),
            "mrcfa": (mrcfa.MRCFA, lambda source: mrcfa.from_official(source.tensors), "nvlabs-segformer")}


def _backbone_converters() -> dict[str, tuple[Callable[[nn.Module], bool], str, Callable[[SourceFile], Converted]]]:
    """Backbone format -> (which segmentors it fits, what they must be, its key map)."""
    from vssbench.methods.segmentors import Mask2Former, SegFormer, SingleMapSegmentor, mask2former, pspnet, segformer

    def backbone_type(kind: str) -> Callable[[nn.Module], bool]:
        return lambda s: isinstance(s, Mask2Former) and s.config.backbone_config.model_type == kind

    swin, resnet = backbone_type("swin"), backbone_type("resnet")
    return {
        "hf-mit": (lambda s: isinstance(s, SegFormer), "SegFormer",
                   lambda source: segformer.backbone_from_hf_classifier(  # SegformerModel's keys lack the prefix
                       {f"segformer.{k}" if k.startswith(("encoder.", "stages.")) else k: v
                        for k, v in source.tensors.items()})),
        "nvlabs-mit": (lambda s: isinstance(s, SegFormer), "SegFormer",
                       lambda source: segformer.backbone_from_nvlabs(source.tensors)),
        "mmseg-mit": (lambda s: isinstance(s, SegFormer), "SegFormer",
                      lambda source: segformer.backbone_from_mmseg(source.tensors)),
        "hf-swin": (swin, "Mask2Former with a Swin backbone",
                    lambda source: mask2former.backbone_from_hf_classifier(source.tensors)),
        "official-swin": (swin, "Mask2Former with a Swin backbone",
                          lambda source: mask2former.backbone_from_official_swin(source.tensors)),
        "hf-resnet": (resnet, "Mask2Former with a ResNet backbone",
                      lambda source: mask2former.backbone_from_hf_classifier(source.tensors)),
        "torchvision-resnet": (resnet, "Mask2Former with a ResNet backbone",
                               lambda source: mask2former.backbone_from_torchvision(source.tensors)),
        "detectron2-resnet": (resnet, "Mask2Former with a ResNet backbone",
                              lambda source: mask2former.backbone_from_detectron2(source.tensors)),
        "resnet-v1c": (lambda s: isinstance(s, SingleMapSegmentor), "PSPNet or DeepLab (a deep-stem ResNet)",
                       lambda source: _prefixed(pspnet.backbone_from_resnet_v1c(
                           strip_prefix(source.tensors, "backbone.") or source.tensors), "backbone.")),
    }


def _prefixed(converted: Converted, prefix: str) -> Converted:
    converted.state = {prefix + k: v for k, v in converted.state.items()}
    return converted


def _flow_converter(source: SourceFile, fmt: WeightFormat, target: nn.Module) -> Converted:
    from vssbench.methods import flownet, raft

    if fmt.name in ("raft", "torchvision-raft"):
        if not isinstance(target, raft.RAFT):
            raise CheckpointError(f"{source.path} is {fmt.title}; the flow network here is a {type(target).__name__}")
        try:
            return raft.converted(source.tensors, target)
        except raft.RAFTWeightsError as error:
            raise CheckpointError(f"{source.path}: {error}") from None
    try:
        converted = (flownet.from_flownetpytorch(source.tensors, float(source.info.get("div_flow", 20.0)))
                     if fmt.name == "flownetpytorch" else flownet.from_mmtracking(source.tensors))
    except (TypeError, ValueError) as error:  # div_flow is the file's own entry: it may be anything
        raise CheckpointError(f"{source.path}: {error}") from None
    if isinstance(target, flownet.FlowNetSEncoder):
        converted = flownet.encoder_only(converted)
    elif not isinstance(target, flownet.FlowNetS):
        raise CheckpointError(f"{source.path} is {fmt.title}; the flow network here is a {type(target).__name__}")
    return converted


# Hugging Face config fields that define the architecture, checked against the preset's.
_SEGFORMER_FIELDS = ("num_encoder_blocks", "depths", "hidden_sizes", "num_attention_heads", "sr_ratios",
                     "patch_sizes", "strides", "mlp_ratios")
_MASK2FORMER_FIELDS = ("num_queries", "hidden_dim", "num_attention_heads", "decoder_layers", "encoder_layers",
                       "dim_feedforward", "encoder_feedforward_dim", "feature_size", "mask_feature_size", "pre_norm")
_BACKBONE_FIELDS = {"swin": ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio"),
                    "resnet": ("layer_type", "embedding_size", "depths", "hidden_sizes", "downsample_in_bottleneck")}


def check_hf_config(source: SourceFile, segmentor: nn.Module, backbone_only: bool = False) -> None:
    """A Hugging Face config.json against the preset: a differing field is an error naming it and both values."""
    from vssbench.methods.segmentors import Mask2Former, SegFormer

    config = source.config
    if config is None:
        return
    pairs: list[tuple[str, object, object]] = []
    if isinstance(segmentor, SegFormer):
        fields = _SEGFORMER_FIELDS + (() if backbone_only else ("decoder_hidden_size",))
        pairs = [(name, config.get(name), getattr(segmentor.config, name)) for name in fields if name in config]
    elif isinstance(segmentor, Mask2Former):
        ours = segmentor.config.backbone_config
        theirs = config if backbone_only else config.get("backbone_config") or {}
        if theirs.get("model_type") and theirs["model_type"] != ours.model_type:
            pairs.append(("backbone_config.model_type", theirs["model_type"], ours.model_type))
        else:
            pairs += [(f"backbone_config.{name}" if not backbone_only else name, theirs.get(name), getattr(ours, name))
                      for name in _BACKBONE_FIELDS.get(ours.model_type, ()) if name in theirs]
        if not backbone_only:
            pairs += [(name, config.get(name), getattr(segmentor.config, name)) for name in _MASK2FORMER_FIELDS
                      if name in config]
    for name, theirs_value, ours_value in pairs:
        if _normalised(theirs_value) != _normalised(ours_value):
            raise CheckpointError(f"{source.path}/config.json: {name} is {theirs_value!r}, the preset's is "
                                  f"{ours_value!r}; choose the preset of this architecture")


def _normalised(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------- loading


@dataclass
class LoadRecord:
    """What loading one weights file did: where it went, what was mapped, dropped, missing, noted."""

    component: str  # "method", "segmentor", "backbone", "flow", "reference", "update"
    module: str  # the module path inside the method ("" for the whole method)
    format: str
    file: str
    sha256: str
    mapped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> how many source tensors
    missing: list[str] = field(default_factory=list)  # tensors the source lacks, left as initialised
    reinitialised: list[str] = field(default_factory=list)  # classifier tensors re-initialised (training)
    notes: list[str] = field(default_factory=list)
    loaded_keys: list[str] = field(default_factory=list, repr=False)  # method-level keys now from this file
    files: list[dict] = field(default_factory=list)  # every file read, with the sha256 vssbench computed
    declared: dict = field(default_factory=dict, repr=False)  # a vssbench checkpoint's own record, unverified

    def summary(self) -> str:
        where = f"{self.component} ({self.module})" if self.module and self.module != self.component else (
            self.component if self.module else "the whole method")
        parts = [f"{Path(self.file).name} ({self.format}) into {where}: {self.mapped} tensors"]
        parts += [f"dropped {count} ({reason})" for reason, count in self.dropped.items()]
        if self.missing:
            parts.append(f"{len(self.missing)} not in the file, left as initialised ({_first(self.missing)})")
        if self.reinitialised:
            parts.append(f"classifier re-initialised ({_first(self.reinitialised)})")
        return "; ".join(parts + self.notes)

    def as_row(self) -> dict:
        """The provenance a result row records."""
        return {"component": self.component, "module": self.module, "format": self.format, "file": self.file,
                "sha256": self.sha256, "files": list(self.files), "mapped": self.mapped,
                "dropped": dict(self.dropped), "missing": len(self.missing),
                "reinitialised": list(self.reinitialised), "notes": list(self.notes)}


def _first(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (" ..." if len(keys) > count else "")


def load_weights(method: nn.Module, path: str | Path, component: str | None = None, purpose: str = "evaluate",
                 reinit_classifier: bool = False) -> LoadRecord:
    """Load the weights at ``path`` into ``method`` (or its ``component``) and say what was done.

    ``purpose`` "evaluate" (``--checkpoint``) refuses a class-count mismatch; "train" (``--init``)
    re-initialises the classifier instead when ``reinit_classifier`` is given. Everything else that
    does not fit is a :class:`CheckpointError` naming the file and the tensors.
    """
    source = read_source(path)
    fmt = detect_format(source)
    names = [*method.weight_components(), "backbone", *method.component_methods()]
    if component is not None and component not in names:
        raise CheckpointError(f"{source.path}: {method.spec} has no component {component!r}; it has "
                              f"{', '.join(dict.fromkeys(names))}")
    if fmt.kind == "method":
        return _load_vssbench(method, source, component, purpose, reinit_classifier)
    name, module_path, converted, scope = _convert(method, source, fmt, component)
    return _load_converted(method, module_path, name, converted, source, fmt, purpose, reinit_classifier, scope)


def _convert(method: nn.Module, source: SourceFile, fmt: WeightFormat,
             component: str | None) -> tuple[str, str, Converted, str]:
    """Where a file of format ``fmt`` goes in ``method`` and its tensors converted for that module:
    (component name, module path, converted tensors, key scope within the module)."""
    components = method.weight_components()
    if fmt.kind == "video":
        method_class, convert, branch = _video_converters()[fmt.name]
        if isinstance(method, method_class) and component in (None, "method"):
            return "method", "", convert(source), ""
        fmt = next(f for f in FORMATS if f.name == branch)  # its per-frame branch, into a segmentor
    if fmt.kind == "flow":
        name = _component_for(method, component, "flow", source, fmt)
        return name, components[name], _flow_converter(source, fmt, method.get_submodule(components[name])), ""
    if fmt.kind == "segmentor":
        segmentor_class, convert = _segmentor_converters()[fmt.name]
        name = _segmentor_component(method, component, source, fmt, lambda s: isinstance(s, segmentor_class),
                                    segmentor_class.__name__)
        segmentor = method.get_submodule(components[name])
        _check_head(source, fmt, segmentor)
        check_hf_config(source, segmentor)
        return name, components[name], convert(source), ""
    fits, needed, convert = _backbone_converters()[fmt.name]
    name = _segmentor_component(method, None if component == "backbone" else component, source, fmt, fits, needed)
    segmentor = method.get_submodule(components[name])
    check_hf_config(source, segmentor, backbone_only=True)
    return "backbone", components[name], convert(source), f"{segmentor.backbone_path}."


def infer_num_classes(source: SourceFile, fmt: WeightFormat, spec: str, variant: str | None = None) -> int:
    """The class count of the weights read: a vssbench checkpoint's, a Hugging Face config's, else the
    outputs of the segmentor classifier the conversion finds."""
    from vssbench.methods.base import build_method
    from vssbench.methods.segmentors import ImageSegmentor

    if source.payload is not None:
        return source.payload["num_classes"]  # checked when it was read
    config = source.config or {}
    where = f"{source.path}/config.json"
    if "id2label" in config:
        if not isinstance(config["id2label"], dict):
            raise CheckpointError(f"{where}: id2label is a {type(config['id2label']).__name__}; expected an object "
                                  "of class id -> name")
        return check_class_count(len(config["id2label"]), f"{where} (id2label)", CheckpointError)
    if "num_labels" in config:
        return check_class_count(config["num_labels"], f"{where} (num_labels)", CheckpointError)
    if fmt.kind in ("backbone", "flow"):
        raise CheckpointError(f"{source.path} is {fmt.title}, which has no classifier; give --num-classes")
    probe = build_method(spec, 2, variant)
    _, module_path, converted, _ = _convert(probe, source, fmt, None)
    if not module_path:  # a whole video method: its per-frame branch's classifier counts the classes
        module_path = next((path for path, m in probe.named_modules() if isinstance(m, ImageSegmentor)), "")
        converted = Converted(strip_prefix(converted.state, f"{module_path}."))
    segmentor = probe.get_submodule(module_path)
    if isinstance(segmentor, ImageSegmentor):
        state = from_portable(segmentor, converted.state)
        for key, tensor in state.items():
            if key.startswith(segmentor.classifier_prefixes) and key.endswith("weight"):
                return check_class_count(tensor.shape[0] - segmentor.classifier_extra_outputs,
                                         f"{source.path} (its classifier {key})", CheckpointError)
    raise CheckpointError(f"{source.path}: found no classifier to count classes from; give --num-classes")


def _component_for(method: nn.Module, component: str | None, wanted: str, source: SourceFile,
                   fmt: WeightFormat) -> str:
    components = method.weight_components()
    name = component or wanted
    if name not in components:
        raise CheckpointError(f"{source.path} is {fmt.title}, a {wanted} network; {method.spec} "
                              f"({method.variant}) has none (its parts: {', '.join(components) or 'none'})")
    return name


def _segmentor_component(method: nn.Module, component: str | None, source: SourceFile, fmt: WeightFormat,
                         fits: Callable[[nn.Module], bool], needed: str) -> str:
    """The segmentor component a segmentor or backbone file goes to: the one named, else the only one it fits."""
    from vssbench.methods.segmentors import ImageSegmentor

    components = method.weight_components()
    segmentors = {name: path for name, path in components.items()
                  if isinstance(method.get_submodule(path), ImageSegmentor)}
    if component is not None:
        if component not in segmentors:
            raise CheckpointError(f"{source.path} is {fmt.title}; {method.spec}'s {component!r} is not a segmentor "
                                  f"(its segmentors: {', '.join(segmentors)})")
        candidates = [component]
    else:
        candidates = [name for name, path in segmentors.items() if fits(method.get_submodule(path))]
    described = ", ".join(f"{name} = {type(method.get_submodule(path)).__name__}" for name, path in segmentors.items())
    if not candidates or not fits(method.get_submodule(segmentors[candidates[0]])):
        raise CheckpointError(f"{source.path} is {fmt.title}, which fills a {needed}; {method.spec} has "
                              f"{described or 'no segmentor'}")
    if len(candidates) > 1:
        raise CheckpointError(f"{source.path} is {fmt.title}, which fits several parts of {method.spec} "
                              f"({', '.join(candidates)}); name one, e.g. --init {candidates[0]}={source.path}")
    return candidates[0]


def _check_head(source: SourceFile, fmt: WeightFormat, segmentor: nn.Module) -> None:
    """mmseg's SegFormer head and the paper's are different networks: say which preset takes the file."""
    from vssbench.methods.segmentors import SegFormer

    if not isinstance(segmentor, SegFormer):
        return
    wanted = {"mmseg-segformer": "mmseg"}.get(fmt.name, "hf")
    if segmentor.head != wanted:
        advice = ("a segformer-*-mmseg preset (mmseg's SegformerHead)" if wanted == "mmseg"
                  else "a segformer-* preset without -mmseg (the paper's all-MLP head)")
        raise CheckpointError(f"{source.path} is {fmt.title}, whose decode head is not this preset's; use {advice}")


def _classifier_prefixes(module: nn.Module) -> tuple[str, ...]:
    """Key prefixes of every segmentor classifier inside ``module`` (what --reinit-classifier re-initialises)."""
    from vssbench.methods.segmentors import ImageSegmentor

    return tuple(f"{name}.{prefix}" if name else prefix for name, child in module.named_modules()
                 if isinstance(child, ImageSegmentor) for prefix in child.classifier_prefixes)


def _allowed_missing(module: nn.Module) -> list[re.Pattern]:
    """Keys a module may lack in a file: deterministic buffers, and what Hugging Face models ignore."""
    from transformers import PreTrainedModel

    patterns = [DERIVED_BUFFERS]
    for prefix, submodule in _outermost_pretrained(module, PreTrainedModel):
        for pattern in getattr(submodule, "_keys_to_ignore_on_load_missing", None) or []:
            patterns.append(re.compile(re.escape(prefix) + pattern))
        for name, child in submodule.named_modules():
            for pattern in getattr(child, "_keys_to_ignore_on_load_missing", None) or []:
                if child is not submodule and isinstance(child, PreTrainedModel):
                    patterns.append(re.compile(re.escape(f"{prefix}{name}.") + pattern))
    return patterns


def _load_converted(method: nn.Module, module_path: str, component: str, converted: Converted, source: SourceFile,
                    fmt: WeightFormat, purpose: str, reinit_classifier: bool, scope: str = "") -> LoadRecord:
    """Check converted tensors against the module at ``module_path`` (only its keys under ``scope``) and load them."""
    target = method.get_submodule(module_path) if module_path else method
    expected = {k: v for k, v in target.state_dict().items() if k.startswith(scope)}
    provided = from_portable(target, converted.state)
    record = LoadRecord(component, module_path, fmt.name, str(source.path), source.sha256,
                        dropped={reason: len(keys) for reason, keys in converted.dropped.items()},
                        notes=list(converted.notes), files=list(source.files),
                        declared=dict((source.payload or {}).get("metadata") or {}))
    prefix = f"{module_path}." if module_path else ""
    for pattern, why in getattr(method, "unused_weights", {}).items():  # left out on purpose, as the method says
        for key in [k for k in provided if k not in expected and re.search(pattern, prefix + k)]:
            del provided[key]
            record.dropped[why] = record.dropped.get(why, 0) + 1
    unexpected = sorted(set(provided) - set(expected))
    classifier = _classifier_prefixes(target)
    mismatched = sorted(k for k in set(provided) & set(expected) if provided[k].shape != expected[k].shape)
    class_mismatch = [k for k in mismatched if k.startswith(classifier)] if classifier else []
    if class_mismatch:
        theirs, ours = provided[class_mismatch[0]].shape[0], expected[class_mismatch[0]].shape[0]
        if purpose != "train" or not reinit_classifier:
            advice = ("; in training, --reinit-classifier starts the classifier afresh" if purpose == "train"
                      else "; evaluate on data with that many classes, or train a classifier for this data")
            raise CheckpointError(f"{source.path}: its classifier ({class_mismatch[0]}) has {theirs} outputs, "
                                  f"the data {ours} classes{advice}")
        for key in class_mismatch:
            del provided[key]
        record.reinitialised = class_mismatch
        record.notes.append(f"classifier re-initialised: {theirs} classes in the file, {ours} in the data")
    mismatched = [k for k in mismatched if k not in class_mismatch]
    allowed = _allowed_missing(target) + [re.compile(pattern) for pattern in converted.new]
    missing = sorted(k for k in set(expected) - set(provided) - set(class_mismatch)
                     if not any(p.search(k) for p in allowed))
    if unexpected or missing or mismatched:
        details = []
        for title, keys in (("tensors the target lacks", unexpected), ("tensors the file lacks", missing),
                            ("shape mismatches", mismatched)):
            if keys:
                shown = keys[:5] if title != "shape mismatches" else [
                    f"{k} {tuple(provided[k].shape)} vs {tuple(expected[k].shape)}" for k in keys[:5]]
                details.append(f"{title} ({len(keys)}): {', '.join(shown)}{' ...' if len(keys) > 5 else ''}")
        where = method.spec if not module_path else (
            f"{method.spec}'s {component}" + (f" ({module_path})" if module_path != component else ""))
        raise CheckpointError(f"{source.path} ({fmt.title}) does not fit {where}; " + "; ".join(details))
    target.load_state_dict(provided, strict=False)
    if converted.conventions:
        _set_conventions(target, converted.conventions, source.path)
    record.mapped = len(provided)
    record.missing = sorted(set(expected) - set(provided) - set(class_mismatch))
    record.loaded_keys = [prefix + k for k in provided]
    log.info("loaded %s", record.summary())
    return record


def _load_vssbench(method: nn.Module, source: SourceFile, component: str | None, purpose: str,
                   reinit_classifier: bool) -> LoadRecord:
    """A vssbench checkpoint: of the method itself, of one of its component methods, or of a per-frame
    segmentor it contains."""
    payload = source.payload
    spec = f"{payload.get('method')}:{payload.get('preset')}"
    target, module_path, name = None, "", "method"
    if component is None and (payload.get("method"), payload.get("preset")) == (method.name, method.preset):
        target = method
    else:
        for component_name, component_method in method.component_methods().items():
            if component in (None, component_name) and spec == component_method.spec:
                target, name = component_method, component_name
                module_path = next(p for p, m in method.named_modules() if m is component_method)
        if target is None and payload.get("method") in ("perframe", "copy"):
            for component_name, path in method.weight_components().items():
                segmentor = method.get_submodule(path)
                if component in (None, component_name) and getattr(segmentor, "preset", None) == payload.get("preset"):
                    return _load_segmentor_checkpoint(method, source, payload, path, component_name, purpose,
                                                      reinit_classifier)
    if target is None:
        parts = ", ".join(m.spec for m in method.component_methods().values()) or "none"
        raise CheckpointError(f"{source.path} is a vssbench checkpoint of {spec} ({payload.get('variant')}); "
                              f"{method.spec} takes one of itself, of its components ({parts}) or of a per-frame "
                              "segmentor it contains")
    _check_revisions(payload, target, source.path)
    state = payload["state_dict"]
    state = from_portable(target, state) if payload.get("format") == CHECKPOINT_FORMAT else state
    record = _load_converted(method, module_path, name, Converted(state), source, VSSBENCH_FORMAT, purpose,
                             reinit_classifier)
    _apply_saved_conventions(target, payload, source.path)
    return record


def _load_segmentor_checkpoint(method: nn.Module, source: SourceFile, payload: dict, path: str, component: str,
                               purpose: str, reinit_classifier: bool) -> LoadRecord:
    """A per-frame (``perframe``/``copy``) vssbench checkpoint into the segmentor at ``path``."""
    segmentor = method.get_submodule(path)
    _check_revisions(payload, segmentor, source.path, prefix="segmentor")
    state = strip_prefix(payload["state_dict"], "segmentor.")
    if payload.get("format") == CHECKPOINT_FORMAT:
        state = from_portable(segmentor, state)
    record = _load_converted(method, path, component, Converted(state), source, VSSBENCH_FORMAT, purpose,
                             reinit_classifier)
    conventions = (payload.get("conventions") or {}).get("segmentor")
    if conventions:
        _set_conventions(segmentor, conventions, source.path)
    return record


def _check_revisions(payload: dict, target: nn.Module, path: Path, prefix: str = "") -> None:
    """Refuse weights written for an earlier computation of the same architecture (``ImageSegmentor.revision``)."""
    from vssbench.methods.segmentors import ImageSegmentor

    recorded = payload.get("revisions") or {}
    modules = [(prefix, target)] if prefix else list(target.named_modules())
    for name, module in modules:
        if isinstance(module, ImageSegmentor):
            ours = f"{type(module).__name__}/{module.revision}"
            theirs = recorded.get(name, f"{type(module).__name__}/1")
            if theirs != ours:
                raise CheckpointError(f"{path} was written for {theirs} ({name}), this vssbench computes {ours}: the "
                                      "same weights would compute another network; retrain, or convert again from "
                                      "the source weights")


def _apply_saved_conventions(target: nn.Module, payload: dict, path: Path) -> None:
    for name, conventions in (payload.get("conventions") or {}).items():
        try:
            module = target.get_submodule(name) if name else target
        except AttributeError:
            raise CheckpointError(f"{path}: its conventions name a module {name!r} that "
                                  f"{getattr(target, 'spec', type(target).__name__)} does not have") from None
        _set_conventions(module, conventions, path)


def _set_conventions(module: nn.Module, conventions: object, path: Path) -> None:
    """A source's numerical conventions (a layer-norm epsilon, a flow scale) into ``module``: values the
    file supplies, so a value of the wrong kind is bad input naming the file, not a traceback."""
    if not hasattr(module, "set_conventions"):
        return
    try:
        if not isinstance(conventions, dict):
            raise TypeError(f"a {type(conventions).__name__}, not a dictionary")
        module.set_conventions(conventions)
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: its numerical conventions do not apply to {type(module).__name__} "
                              f"({error})") from None


def random_parameters(method: nn.Module, records: list[LoadRecord]) -> dict[str, int]:
    """Parameters no record loaded, counted per top-level part (``feature_flow``: 1234)."""
    loaded = {key for record in records for key in record.loaded_keys}
    missing: dict[str, int] = {}
    for name, parameter in method.named_parameters():
        if name not in loaded:
            part = ".".join(name.split(".")[:2]) if name.startswith(("reference.", "update.")) else name.split(".")[0]
            missing[part] = missing.get(part, 0) + parameter.numel()
    return missing


# --------------------------------------------------------------------------- vssbench checkpoints


def save_checkpoint(method: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the method's weights under portable names, with what built them, atomically."""
    from vssbench.methods.segmentors import ImageSegmentor

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "method": method.name,
        "preset": method.preset,
        "variant": method.variant,
        "num_classes": method.num_classes,
        "revisions": {name: f"{type(m).__name__}/{m.revision}" for name, m in method.named_modules()
                      if isinstance(m, ImageSegmentor)},
        "conventions": {name: m.conventions() for name, m in method.named_modules() if hasattr(m, "conventions")},
        "metadata": metadata or {},
        "state_dict": to_portable(method, method.state_dict()),
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def checkpoint_metadata(path: str | Path) -> dict:
    """The training record a vssbench checkpoint carries about itself (empty for other formats and for
    none), checked as :func:`read_source` checks it. What it says is the file's claim: rows show it as
    declared by the checkpoint."""
    path = Path(path)
    if path.is_dir():
        return {}
    check_regular_file(path, "weights", CheckpointError)
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            return {}
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a vssbench checkpoint (a class it pickles, ...): no training record
        return {}
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, LEGACY_CHECKPOINT_FORMAT):
        return {}
    check_depth(payload, f"the object in {path}", CheckpointError)
    return dict(_check_payload(payload, path).get("metadata") or {})


def weights_digest(path: str | Path) -> str:
    """The sha256 a row records for weights: of the file, or of a Hugging Face folder's files (config
    and weight files, the shards an index names), read without loading a tensor."""
    path = Path(path)
    if not path.is_dir():
        check_regular_file(path, "weights", CheckpointError)
        return file_sha256(path)
    files = [path / "config.json", *_hf_weight_files(path)]
    for file in files:
        check_regular_file(file, "weights", CheckpointError)
    return _folder_digest([{"file": str(file), "sha256": file_sha256(file)} for file in files])
