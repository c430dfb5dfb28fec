"""Decoded-dataset cache: decoding 60,000 JPEGs takes a while, reading one uint8 tensor file does not.

A cache file is named after the dataset, the split and a hash of where the data came from (the source path and
each file's path below it, size and modification time), so changed data never reads a stale cache: an image moved
to another class folder, a renamed class, a file replaced by one of another size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

CACHE_DIR_NAME = ".ibrar-cache"
CACHE_FORMAT = 2


def source_fingerprint(source: Path, files: Sequence[Path]) -> str:
    """Short hash of the source path and of each file's relative path (so its class folder), size and mtime."""
    digest = hashlib.sha1(f"v{CACHE_FORMAT}|{source.resolve()}".encode())
    for f in files:
        stat = f.stat()
        name = os.path.relpath(f, source)
        digest.update(f"|{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cache_path(root: Path, name: str, split: str, fingerprint: str) -> Path:
    """Where the decoded tensors of one dataset split live: `root/.ibrar-cache/<name>-<split>-<hash>.pt`."""
    return Path(root) / CACHE_DIR_NAME / f"{name}-{split}-{fingerprint}.pt"


def read_cache(path: Path) -> dict | None:
    """The cached dict (images, labels, classes), or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: decode again rather than fail
        return None
    if not isinstance(payload, dict) or not {"images", "labels", "classes"} <= payload.keys():
        return None
    return payload


def write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> bool:
    """Save atomically (temp file, then rename); False, without raising, if the folder is not writable or the
    disk is full (torch.save reports a failed write as a RuntimeError)."""
    payload = {"images": images.contiguous(), "labels": labels.contiguous(), "classes": list(classes)}
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
            temp_name = f.name
            torch.save(payload, f)
        os.chmod(temp_name, 0o644)  # NamedTemporaryFile creates 0600; the cache is as shareable as the data
        os.replace(temp_name, path)
    except (OSError, RuntimeError):
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)
        return False
    return True
