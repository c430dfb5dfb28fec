"""The run folder's line-per-record logs (metrics.jsonl, info_plane.jsonl): append, read, cut back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    if rows:
        with path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a line cut by a kill is skipped. A missing file reads as empty."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Keep only the records `keep` accepts (e.g. those a resumed checkpoint covers)."""
    if path.is_file():
        path.write_text("".join(json.dumps(row) + "\n" for row in read_jsonl(path) if keep(row)))
