"""The kit's `fetch ROW [FIRST]` stage: a trained row's `final.pt` (its fp32 weights and mask, about 130 MB for
VGG16) back in sha256-checked shards, a few per call, while the machine is warm (its disk goes 30 s after a
call). Each call returns SHARDS_PER_CALL shards of 15 MiB and the manifest: with stage.json and stage.log, at
most 7 files and under 64 MiB. `ibrar fetch-assemble DIR...` joins them here, checks them and loads the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import OPTIMIZERS, Context, optimizer, row_and_seed

from ibrar.run_folder import RunFolder

SHARDS_PER_CALL = 4  # 4 x 15 MiB: under the 64 MiB a call returns, with the small files beside them


def find_run(ctx: Context, row: str) -> Path:
    """The row's run folder on this machine (as `table4-ROW` named it: `run_name`), found without ibrar's config
    code: the fetch call installs nothing, so pydantic is not importable there."""
    folder = ctx.runs / ("table4-smoke" if ctx.rehearsal else "table4-paper")
    row, seed = row_and_seed(row)
    wanted = row if row.startswith(("vgg16-", "resnet18-")) else f"vgg16-{row}"
    suffix = optimizer()[1]
    other = [s for _, s in OPTIMIZERS.values() if s and s != suffix]

    def of_the_row(name: str) -> bool:
        base, found_seed = row_and_seed(name)
        if found_seed != seed or not base.endswith(suffix) or any(base.endswith(s) for s in other):
            return False
        group = base[:len(base) - len(suffix)]
        return group == wanted or group.startswith(f"{wanted}-")

    names = sorted(p.name for p in folder.glob("*") if p.is_dir() and of_the_row(p.name))
    if len(names) != 1:
        raise SystemExit(f"error: fetch {row}{f'-seed{seed}' if seed else ''}: expected one run folder of that row "
                         f"in {folder}, found {names} (a fresh machine has none; fetch only while the machine that "
                         "trained it is warm)")
    return folder / names[0]


def stage_fetch(ctx: Context, row: str, first: int) -> tuple[str, dict[str, Any]]:
    from ibrar.shards import SHARD_BYTES, split

    run_dir = find_run(ctx, row)
    final = RunFolder(run_dir).final_file
    if not final.is_file():
        raise SystemExit(f"error: no {final}: the row has not finished training on this machine")
    # the rehearsal's tiny checkpoints are cut small, so that they too come in several shards over several calls
    shard_bytes = int(SHARD_BYTES if not ctx.rehearsal else max(1024, final.stat().st_size // 5))
    manifest = split(final, ctx.out, first, SHARDS_PER_CALL, shard_bytes,
                     extra={"run": f"{run_dir.parent.name}/{run_dir.name}"})
    where = {"run": manifest["run"], "shards": manifest["here"], "count": manifest["count"],
             "sha256": manifest["sha256"]}
    print(f"== fetch: {final} ({manifest['bytes'] / 2**20:.1f} MiB), shards {manifest['here']} of "
          f"{manifest['count']}, sha256 {manifest['sha256']}", flush=True)
    if manifest["next_first"] is None:
        return "finished", where
    where["next_first"] = manifest["next_first"]
    return f"shards {manifest['next_first']}.. still to come: call again at once", where


def fetch_args(rest: list[str]) -> tuple[str, int]:
    if not rest or len(rest) > 2 or (len(rest) == 2 and not rest[1].isdigit()):
        raise SystemExit("error: usage: bash bench/gpu/run.sh fetch ROW [FIRST_SHARD] (e.g. fetch 6, then fetch 6 4)")
    return rest[0], int(rest[1]) if len(rest) == 2 else 0


def next_command(row: str, where: dict[str, Any]) -> str:
    return f"bash bench/gpu/run.sh fetch {row} {where['next_first']}"

