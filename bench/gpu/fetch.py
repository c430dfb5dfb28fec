"""The kit's `fetch ROW [FIRST]` stage: a trained row's (or `table1-RUN`'s, `fig2-RUN`'s) `final.pt` (its fp32
weights and mask, about 130 MB for VGG16) back in sha256-checked shards, a few per call, while the machine is warm
(its disk goes 30 s after a call). Each call returns SHARDS_PER_CALL shards of 15 MiB and the manifest: with
stage.json and stage.log, at most 7 files and under 64 MiB. `ibrar fetch-assemble DIR...` joins them here, checks
them and loads the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import OPTIMIZERS, Context, experiment_of, named_by, optimizer, row_and_seed

from ibrar.run_folder import RunFolder

SHARDS_PER_CALL = 4  # 4 x 15 MiB: under the 64 MiB a call returns, with the small files beside them


def find_run(ctx: Context, row: str) -> Path:
    """The run folder on this machine of a Table 4 row (`6`, `6-seed1`, `resnet18-6`) or of another kit
    experiment's run (`table1-pgd_at-ibrar`, `fig2-hbar`), as its stage named it (`run_name`); found without
    ibrar's config code: the fetch call installs nothing, so pydantic is not importable there."""
    experiment, run = experiment_of(row)
    experiment, run = (experiment, run) if run is not None else ("table4", row)
    folder = ctx.runs / f"{experiment}-{'smoke' if ctx.rehearsal else 'paper'}"
    run, seed = row_and_seed(run)
    names = folders_of(folder, run, seed, experiment, optimizer()[1])
    if len(names) != 1:
        # a row trained with the other optimizer has its folder under another name: say which knob finds it
        others = [f"IBRAR_GPU_OPTIM={knob} bash bench/gpu/run.sh fetch {row} finds {found}"
                  for knob, (_, suffix) in OPTIMIZERS.items() if suffix != optimizer()[1]
                  and (found := folders_of(folder, run, seed, experiment, suffix))]
        hint = f"; {'; '.join(others)}" if others and not names else ""
        raise SystemExit(f"error: fetch {row}: expected one run folder of that row in {folder}, found {names}{hint} "
                         "(a fresh machine has none; fetch only while the machine that trained it is warm)")
    return folder / names[0]


def folders_of(folder: Path, run: str, seed: int, experiment: str, suffix: str) -> list[str]:
    """The run folders in `folder` of `run` (as a stage names it) and `seed`, trained with the optimizer whose
    run-name suffix is `suffix` (`run_name`)."""
    other = [s for _, s in OPTIMIZERS.values() if s and s != suffix]

    def group_of(name: str) -> str | None:
        base, found_seed = row_and_seed(name)
        if found_seed != seed or not base.endswith(suffix) or any(base.endswith(s) for s in other):
            return None
        return base[:len(base) - len(suffix)]

    groups = {p.name: group for p in folder.glob("*") if p.is_dir() and (group := group_of(p.name)) is not None}
    wanted = set(named_by(run, set(groups.values()), experiment))
    return sorted(n for n, g in groups.items() if g in wanted)


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
        raise SystemExit("error: usage: bash bench/gpu/run.sh fetch ROW [FIRST_SHARD] (e.g. fetch 6, then fetch 6 4; "
                         "a Table 1 run: fetch table1-pgd_at-ibrar)")
    return rest[0], int(rest[1]) if len(rest) == 2 else 0


def next_command(row: str, where: dict[str, Any]) -> str:
    return f"bash bench/gpu/run.sh fetch {row} {where['next_first']}"

