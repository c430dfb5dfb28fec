"""A sha256 beside every weights file ibrar writes, checked on every load, so corrupt weights are never evaluated.

A flipped byte inside a tensor's data leaves a `torch.save` zip or a safetensors file perfectly readable: only
a digest taken when the file was written tells that the numbers changed. The digest lives in a sidecar
`<file>.sha256` in the format of `sha256sum` (`sha256sum -c final.pt.sha256` checks it by hand). Files written
before digests existed have no sidecar and load as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ibrar.errors import IbrarError

SUFFIX = ".sha256"
_CHUNK = 1 << 20


class CorruptWeightsError(IbrarError, ValueError):
    """A weights file whose bytes no longer match the sha256 recorded when it was written."""


def sidecar(path: str | Path) -> Path:
    """Where the digest of `path` is kept."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def file_sha256(path: str | Path, start: int = 0, length: int | None = None) -> str:
    """The hex sha256 of `length` bytes of a file from `start` (by default all of it), read in chunks (a VGG16
    checkpoint is 130 MB; a shard of it is a byte range)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


def record_digest(path: str | Path, digest: str | None = None, *also: str) -> str:
    """Write `<path>.sha256` for `path` (computing the digest unless given) atomically; return the digest.

    `also` are further digests to accept, for the instant between writing the digest of a new file and
    renaming that file over the old one (`replace_verified`).
    """
    path = Path(path)
    digest = digest or file_sha256(path)
    target = sidecar(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{d}  {path.name}\n" for d in dict.fromkeys((digest, *also))))
    os.replace(tmp, target)
    return digest


def recorded_digests(path: str | Path) -> list[str] | None:
    """The digests recorded for `path` (one, or two while a write is in flight), or None when it has no
    sidecar (a file from before digests)."""
    target = sidecar(path)
    if not target.is_file():
        return None
    lines = [line.split() for line in target.read_text().splitlines() if line.strip()]
    if not lines or any(len(fields[0]) != 64 for fields in lines):
        raise CorruptWeightsError(f"{target}: expected a sha256 line '<64 hex digits>  {Path(path).name}', "
                                  f"got {target.read_text()[:80]!r}; delete it only if you trust {Path(path).name}")
    return [fields[0].lower() for fields in lines]


def replace_verified(tmp: str | Path, path: str | Path) -> None:
    """Rename the finished file `tmp` over `path` and record its digest, such that a kill at any instant
    leaves a file that matches its sidecar: the new digest is accepted beside the old one before the rename,
    and alone after it."""
    path = Path(path)
    new = file_sha256(tmp)
    old = recorded_digests(path) if path.is_file() else None
    if old is None and path.is_file():
        old = [file_sha256(path)]
    record_digest(path, new, *(old or ()))
    os.replace(tmp, path)
    record_digest(path, new)


def verify_digest(path: str | Path) -> None:
    """Raise `CorruptWeightsError` naming the file when its bytes differ from the digest recorded at writing."""
    expected = recorded_digests(path)
    if expected is None:
        return
    actual = file_sha256(path)
    if actual not in expected:
        raise CorruptWeightsError(
            f"weights file {path} is corrupt: its sha256 is {actual[:16]}..., but {sidecar(path).name} recorded "
            f"{expected[0][:16]}... when it was written, so it is not loaded. Use an earlier checkpoint, re-export "
            "or re-train the run")
