"""A file cut into sha256-checked shards and put back together, for moving a checkpoint through a channel that
carries only small files (a GPU lease returns at most 8 files of 16 MiB per call: bench/gpu/README.md).

`split` writes some of the shards and a manifest (every shard's sha256 and the whole file's); `assemble` finds
the shards in the folders given, checks each against the manifest, joins them and checks the whole. Standard
library only: the GPU machine cuts the file before any of ibrar's dependencies need to import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ibrar.errors import IbrarError
from ibrar.integrity import file_sha256, replace_verified

MANIFEST = "manifest.json"
SHARD_BYTES = 15 * 2**20  # under the 16 MiB a file may have to come back


class ShardError(IbrarError):
    """A shard or manifest that is missing or does not match its sha256; the message names it and the fix."""


def shard_name(file_name: str, index: int, count: int) -> str:
    return f"{file_name}.shard-{index:03d}-of-{count:03d}"


def plan(path: Path, shard_bytes: int = SHARD_BYTES) -> dict[str, Any]:
    """The manifest of `path` cut into shards of `shard_bytes` (the last one shorter)."""
    size = path.stat().st_size
    count = max(1, -(-size // shard_bytes))
    shards = [{"index": i, "name": shard_name(path.name, i, count), "offset": i * shard_bytes,
               "bytes": min(shard_bytes, size - i * shard_bytes),
               "sha256": file_sha256(path, i * shard_bytes, shard_bytes)} for i in range(count)]
    return {"file": path.name, "bytes": size, "sha256": file_sha256(path), "shard_bytes": shard_bytes,
            "count": count, "shards": shards}


def split(path: str | Path, dest: str | Path, first: int, how_many: int, shard_bytes: int = SHARD_BYTES,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write shards first .. first + how_many - 1 of `path` and the manifest (with `extra` and which shards this
    folder holds) into `dest`; returns the manifest."""
    path, dest = Path(path), Path(dest)
    manifest = {**(extra or {}), **plan(path, shard_bytes)}
    if not 0 <= first < manifest["count"]:
        raise ShardError(f"first shard: {path.name} has shards 0..{manifest['count'] - 1}, asked for {first}")
    chosen = manifest["shards"][first:first + how_many]
    dest.mkdir(parents=True, exist_ok=True)
    with path.open("rb") as source:
        for shard in chosen:
            source.seek(shard["offset"])
            (dest / shard["name"]).write_bytes(source.read(shard["bytes"]))
    manifest["here"] = [shard["index"] for shard in chosen]
    last = chosen[-1]["index"]
    manifest["next_first"] = last + 1 if last + 1 < manifest["count"] else None
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _find(folders: Sequence[Path], name: str) -> list[Path]:
    """`name` in each folder or one folder down (where a device call's files may lie)."""
    found = set()
    for folder in folders:
        found |= {*folder.glob(name), *folder.glob(f"*/{name}")}
    return sorted(found)


def read_manifest(folders: Sequence[str | Path]) -> dict[str, Any]:
    """The manifest the folders share (each fetch call brings its own copy; they must all describe one file)."""
    found = _find([Path(f) for f in folders], MANIFEST)
    if not found:
        raise ShardError(f"DIR: no {MANIFEST} in {', '.join(map(str, folders))}; give the folders the fetch calls "
                         "brought back")
    manifests = []
    for path in found:
        try:
            manifests.append(json.loads(path.read_text()))
        except ValueError as err:  # cut short in transfer, or not a manifest
            raise ShardError(f"{path}: not a readable manifest ({err}); make that fetch call again") from None
        if not isinstance(manifests[-1], dict) or not {"sha256", "shards", "count"} <= manifests[-1].keys():
            raise ShardError(f"{path}: not a fetch manifest (no sha256, shards and count); make that fetch call "
                             "again")
    hashes = {m["sha256"] for m in manifests}
    if len(hashes) != 1:
        raise ShardError(f"DIR: the manifests describe {len(hashes)} different files ({', '.join(map(str, found))}); "
                         "give the folders of one fetch only")
    return manifests[0]


def assemble(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Join the shards found in `folders` (or one folder down) into `out`, each checked against the manifest's
    sha256 first and the whole file after; returns the manifest. Nothing is left at `out` on any failure."""
    folders = [Path(f) for f in folders]
    manifest = read_manifest(folders)
    out = Path(out)
    missing = [s["name"] for s in manifest["shards"] if not _find(folders, s["name"])]
    if missing:
        raise ShardError(f"shards missing: {', '.join(missing)} (of {manifest['count']}); make the fetch calls "
                         "that bring them (each manifest's next_first) and give all their folders")
    if out.is_file() and file_sha256(out) != manifest["sha256"]:
        raise ShardError(f"{out} already holds other weights; give --into another folder, or move that file away "
                         "first (it is not replaced)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.assembling")
    try:
        with tmp.open("wb") as target:
            for shard in manifest["shards"]:
                path = _find(folders, shard["name"])[0]
                if path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
                    raise ShardError(f"shard {path}: its sha256 does not match the manifest's (corrupt or cut "
                                     "short); fetch that shard again")
                target.write(path.read_bytes())
        if file_sha256(tmp) != manifest["sha256"]:
            raise ShardError(f"{out.name}: the joined shards do not match the whole file's sha256; fetch again")
        replace_verified(tmp, out)  # with its sha256 sidecar, as every weights file ibrar writes
    finally:
        tmp.unlink(missing_ok=True)
    return manifest
