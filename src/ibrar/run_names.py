"""How a run folder's name says what it holds: `<group><variant>[-seed<k>]`, the row of an experiment (its run
group), the GPU kit's variant of it (`-authors-optim`: the authors' code's optimizer) and its seed (none for seed
0, as `ibrar reproduce` names a run of one seed), so that the report and the ledger find a row's runs of one
variant however many seeds and variants sit beside them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ibrar.experiments import build_experiment


def split_variant(name: str, groups: Iterable[str]) -> tuple[str, str, str] | None:
    """A run folder's name as (group, variant, seed part): `vgg16-6-ibrar-authors-optim-seed1` ->
    ('vgg16-6-ibrar', '-authors-optim', '-seed1'); None when it starts with none of `groups` (the longest wins)."""
    group = max((g for g in groups if name == g or name.startswith(f"{g}-")), key=len, default=None)
    if group is None:
        return None
    rest = name[len(group):]
    seed = m.group(0) if (m := re.search(r"-seed\d+$", rest)) else ""
    return group, rest[:len(rest) - len(seed)], seed


def split_folders(folder: Path, groups: Iterable[str]) -> list[tuple[str, str, str]]:
    """`split_variant` of every run folder in `folder` that starts with one of `groups`."""
    groups = set(groups)
    return [split for d in (sorted(folder.iterdir()) if folder.is_dir() else ()) if d.is_dir()
            and (split := split_variant(d.name, groups)) is not None]


def variants(name: str, scale: str, folder: Path) -> list[str]:
    """The variants of the experiment's runs in `folder`, the plain one ('') first."""
    groups = {spec.group for spec in build_experiment(name, scale).runs}
    return sorted({variant for _, variant, _ in split_folders(folder, groups)}, key=lambda v: (v != "", v))
