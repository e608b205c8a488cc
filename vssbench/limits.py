"""Limits on untrusted input, decided before anything is allocated, and the checks that apply them.

Checkpoints come from drives and mirrors a researcher does not control, datasets from whoever
prepared them. Whatever such a file claims (a class count, a tensor's shape, an image's size, a
name that is joined to a path), vssbench checks it against a limit or against the file's real size
before it builds anything from it, and refuses with an error naming the file and the limit.

Each limit is a documented default (docs/weights.md, "Untrusted files") that an environment variable
overrides, e.g. ``VSSBENCH_MAX_IMAGE_PIXELS=33177600`` for 8K frames:

=========================  ===========================  =======================================================
limit                      default                      why
=========================  ===========================  =======================================================
``MAX_CLASSES``            2048                         above every dataset of the field (ADE20K-full: 847)
``MAX_IMAGE_PIXELS``       3840 x 2160 (4K UHD)         VSPW's largest frames; scoring holds C x H x W floats
``MAX_JSON_BYTES``         8 MiB                        a config.json with 21,841 ImageNet labels is ~1 MiB
``MAX_DEPTH``              32                           configs and training records nest a few levels
``MAX_METADATA_BYTES``     1 MiB                        a checkpoint's training record, as JSON
``TENSOR_BYTES_PER_FILE``  2 x the file's size + 1 MiB  tensors claim no more bytes than the file holds
=========================  ===========================  =======================================================

This module imports neither torch nor NumPy, so that the command line can use it at start-up.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

DEFAULTS = {
    "MAX_CLASSES": 2048,
    "MAX_IMAGE_PIXELS": 3840 * 2160,
    "MAX_JSON_BYTES": 8 << 20,
    "MAX_DEPTH": 32,
    "MAX_METADATA_BYTES": 1 << 20,
}


class LimitError(ValueError):
    """An environment override of a limit that is not a positive integer (bad input, exit 2)."""


def limit(name: str) -> int:
    """The limit ``name`` (a key of :data:`DEFAULTS`), or the positive integer ``$VSSBENCH_<name>`` sets."""
    text = os.environ.get(f"VSSBENCH_{name}")
    if text is None:
        return DEFAULTS[name]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LimitError(f"$VSSBENCH_{name}={text!r}: expected a positive integer (default {DEFAULTS[name]})")
    return value


def override_hint(name: str) -> str:
    return f"a documented limit; set VSSBENCH_{name} to raise it"


def tensor_bytes_allowed(file_bytes: int) -> int:
    """How many bytes the tensors of a file of ``file_bytes`` may claim: each stored byte about once
    (an archive's own overhead and the odd tied weight aside). More means repeated or zero-stride
    references, which would become copies as large as the claim."""
    return 2 * file_bytes + (1 << 20)


def check_class_count(count: object, source: str, error: type[Exception]) -> int:
    """``count`` as a class count, or ``error`` naming ``source`` when it is not an integer in 1..MAX_CLASSES."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise error(f"{source}: the class count is {count!r}; expected an integer")
    maximum = limit("MAX_CLASSES")
    if not 1 <= count <= maximum:
        raise error(f"{source}: {count} classes; expected 1 to {maximum} ({override_hint('MAX_CLASSES')})")
    return count


def check_image_size(width: int, height: int, source: Path, error: type[Exception]) -> None:
    """Refuse an image larger than MAX_IMAGE_PIXELS, from its header, before its pixels are decoded."""
    maximum = limit("MAX_IMAGE_PIXELS")
    if width * height > maximum:
        raise error(f"image {source} is {width}x{height} ({width * height:,} pixels), more than the "
                    f"{maximum:,} allowed ({override_hint('MAX_IMAGE_PIXELS')})")


def check_regular_file(path: Path, what: str, error: type[Exception]) -> None:
    """Only regular files are opened: a FIFO would block forever, a device would never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as problem:
        raise error(f"{what} {path}: cannot read it ({problem.strerror or problem})") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file")
        raise error(f"{what} {path} is {kind}; expected a regular file")


def check_depth(value: object, source: str, error: type[Exception], maximum: int | None = None) -> None:
    """Refuse containers nested deeper than MAX_DEPTH (which would overflow the stack of whatever walks
    them later: JSON encoding of a row, a comparison). Iterative, so it never overflows itself."""
    maximum = maximum or limit("MAX_DEPTH")
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth > maximum:
            raise error(f"{source} is nested more than {maximum} levels deep ({override_hint('MAX_DEPTH')})")
        pending.extend((child, depth + 1) for child in children)


def read_json(path: Path, what: str, error: type[Exception], max_bytes: int | None = None) -> object:
    """A JSON file of at most MAX_JSON_BYTES, nested at most MAX_DEPTH levels, or ``error`` naming it."""
    check_regular_file(path, what, error)
    maximum = max_bytes or limit("MAX_JSON_BYTES")
    size = path.stat().st_size
    if size > maximum:
        raise error(f"{what} {path} is {size:,} bytes, more than the {maximum:,} allowed "
                    f"({override_hint('MAX_JSON_BYTES')})")
    try:
        value = json.loads(path.read_bytes())
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to read") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"cannot read {what} {path}: {problem}") from None
    check_depth(value, f"{what} {path}", error)
    return value


def plain_name(name: str, source: str, error: type[Exception]) -> str:
    """A name that is joined to a folder (a video, a shard) must stay one entry of that folder: no
    separator, no ``..``, not absolute, not empty."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or os.path.isabs(name)):
        raise error(f"{source} names {name!r}; expected the name of an entry of its folder (no '/', no '..', "
                    "not an absolute path)")
    return name


def check_inside(root: Path, path: Path, source: str, error: type[Exception]) -> None:
    """``path``, symbolic links followed, must lie inside ``root`` (also resolved): a link inside a dataset
    or model folder that leads out of it is refused."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise error(f"{source}: {path} leads to {real}, outside {root}; expected every file of the folder "
                    "inside it (copy the files in, or link the whole folder instead)")
