"""The GPU kit's set-up steps, standard library only (they run before ibrar's own dependencies are importable).

    python3 bench/gpu/kit.py size [--kit DIR]             what travels to the GPU machine; fails above 64 MiB
    python3 bench/gpu/kit.py install WHEELS SITE [--rehearsal]   pip-install carried wheels into SITE, offline
    python3 bench/gpu/kit.py unpack TARBALL DEST          unpack the carried CIFAR-10 (once per machine)
    python3 bench/gpu/kit.py slim WHEEL PREFIX            drop files a wheel bundles but nothing imports
    python3 bench/gpu/kit.py collect FILES_AT             copy a device call's results into results/ (a
                                                          table4.tar.gz, table1.tar.gz or fig2.tar.gz unpacked)

What travels in a device call: the tracked files, the untracked files git does not ignore, a `shared/` folder
in the checkout, and the carried paths (the kit folder, `.gpu-kit`); together at most 64 MiB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

TRAVEL_LIMIT = 64 * 1024 * 1024  # the device tool's limit on the working tree plus carried paths
REPO = Path(__file__).resolve().parents[2]
DEFAULT_KIT = REPO / ".gpu-kit"
# a row's first evaluation piece (the paper's attacks on the whole test set), kept until AutoAttack's subset is
# merged with it into eval.json; the report reads it under the same name (ibrar.run_files.PARTIAL_EVAL_FILE)
EVAL_FULL = "eval-full.json"
INSTALLED_LIST = "ibrar-kit-installed.txt"  # in the target folder: the wheels the last set-up installed
# the `table4`, `table1` and `fig2` stages' runs, packed (bench/gpu/side_by_side.py), and a `table4-ROW`,
# `table1-RUN` or `fig2-RUN` call's run (stages.export_run); kit.py imports nothing of ibrar's
TARBALLS = ("table4.tar.gz", "table1.tar.gz", "fig2.tar.gz")
# what a `check` call brings back (bench/gpu/cuda_check.py) that collect keeps in results/gpu-check/: the CUDA
# tests' JUnit report holds each failure's traceback, which check.json has only the first line of
CHECK_FILES = ("check.json", "check.md", "cuda-tests.xml", "stage.json")


# ---- what travels ----------------------------------------------------------------------------------


def _folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()] if folder.is_dir() else []


def travel_files(repo: Path = REPO, carried: list[Path] | None = None) -> list[Path]:
    """Every file a device call sends: git's tracked + untracked-not-ignored files, shared/, the carried paths."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.decode()
    files = {(repo / name).resolve() for name in listed.split("\0") if name}
    for folder in [repo / "shared", *(carried or [])]:
        files |= {p.resolve() for p in _folder_files(folder)}
    return sorted(p for p in files if p.is_file())


def travel_size(repo: Path = REPO, kit: Path = DEFAULT_KIT) -> tuple[int, dict[str, int]]:
    """Total bytes that travel, and a breakdown: the working tree, and each top-level entry of the kit."""
    kit = kit.resolve()
    breakdown: dict[str, int] = {}
    total = 0
    for path in travel_files(repo, [kit]):
        size = path.stat().st_size
        total += size
        if path.is_relative_to(kit):
            key = f"{kit.name}/{path.relative_to(kit).parts[0]}"
        else:
            key = "working tree (tracked + untracked, not ignored)"
        breakdown[key] = breakdown.get(key, 0) + size
    return total, breakdown


def check_size(repo: Path = REPO, kit: Path = DEFAULT_KIT, limit: int = TRAVEL_LIMIT) -> int:
    """Print what travels; exit code 1 when it exceeds the device tool's limit."""
    total, breakdown = travel_size(repo, kit)
    for key, size in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"  {size / 2**20:8.2f} MiB  {key}")
    verdict = "fits" if total <= limit else "TOO LARGE"
    print(f"what travels to the GPU machine: {total / 2**20:.2f} MiB of {limit / 2**20:.0f} MiB: {verdict}")
    if total > limit:
        print("  make it smaller: drop wheels the device already has (KINDS.md lists its packages), or ignore "
              "large untracked files (.gitignore)", file=sys.stderr)
        return 1
    return 0


# ---- carried wheels ----------------------------------------------------------------------------------


def import_name(wheel: Path) -> str:
    """The module a wheel provides, from its file name (`pydantic_core-2.50.5-...whl` -> `pydantic_core`)."""
    return wheel.name.split("-")[0].lower()


def fits_this_python(wheel: Path) -> bool:
    """Whether this interpreter can load the wheel: pure Python, or built for this CPython (`cp312`)."""
    tags = wheel.name.split("-")[-3].split(".")
    here = f"{sys.version_info.major}{sys.version_info.minor}"
    return any(tag in ("py3", f"py{here}", f"cp{here}") for tag in tags)


def install_wheels(wheels: Path, site: Path, rehearsal: bool = False, python: str = sys.executable) -> list[str]:
    """pip-install every wheel in `wheels` into `site` without an index or dependencies; returns what was installed.

    On the GPU machine every carried wheel is installed, and so in a rehearsal under a Python that every wheel
    fits (a replica of the machine's 3.12: the same shadowing of its own packages is then rehearsed too). In a
    rehearsal under another Python, a wheel whose module already imports here is skipped: a cp312 build cannot
    load, and the pure wheels beside it must not outrank the versions that match what does load.
    """
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    skip_importable = rehearsal and not all(fits_this_python(w) for w in found)
    chosen = [w for w in found if not (skip_importable and importlib.util.find_spec(import_name(w)) is not None)]
    for wheel in sorted(set(found) - set(chosen)):
        print(f"rehearsal: {import_name(wheel)} already imports here; {wheel.name} not installed")
    if not found:
        print(f"no wheels in {wheels}: nothing to install (run bench/gpu/prepare.sh to carry them)")
    if chosen:
        site.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site),
                        *map(str, chosen)], check=True)
        print(f"installed into {site}: {', '.join(w.name for w in chosen)}")
    if site.is_dir():
        (site / INSTALLED_LIST).write_text("".join(f"{w.name}\n" for w in chosen))
    return [w.name for w in chosen]


def slim_wheel(wheel: Path, drop_prefix: str) -> int:
    """Rewrite `wheel` without the files under `drop_prefix` (and their RECORD lines); returns bytes saved."""
    before = wheel.stat().st_size
    slimmed = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slimmed, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename.startswith(drop_prefix):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines(keepends=True) if not line.startswith(drop_prefix)]
                data = "".join(kept).encode()
            target.writestr(item, data)
    slimmed.replace(wheel)
    saved = before - wheel.stat().st_size
    print(f"{wheel.name}: dropped {drop_prefix} ({saved / 2**20:.1f} MiB)")
    return saved


# ---- carried data ------------------------------------------------------------------------------------


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack the image-folder tarball into `dest` once (a `.complete` marker makes later calls free)."""
    marker = dest / ".complete"
    if marker.is_file():
        print(f"data already unpacked in {dest}")
        return dest
    if not tarball.is_file():
        raise SystemExit(f"error: no {tarball}; run bench/gpu/prepare.sh (it copies CIFAR-10 into the kit)")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        try:
            archive.extractall(dest, filter="data")
        except TypeError:  # a Python without extraction filters (before 3.10.12 / 3.11.4)
            archive.extractall(dest)
    splits = [s for s in ("train", "test") if (dest / s).is_dir()]
    if splits != ["train", "test"]:
        raise SystemExit(f"error: {tarball} holds no train/ and test/ image folders")
    count = sum(1 for s in splits for p in (dest / s).rglob("*") if p.is_file())
    marker.write_text(f"{count}\n")
    print(f"unpacked {count} images into {dest}")
    return dest


# ---- results back here -----------------------------------------------------------------------------------


# the stage's "== evaluating RUN: ..." line, then the table up to the "   (N s)" line that closes it
_EVAL_BLOCK = re.compile(r"^== evaluating (?P<run>\S+): .* on \d+ test examples\n"
                         r"(?P<table>(?:(?!==|   \().*\n)+)", re.M)
_ATTACK_ROW = re.compile(r"^(?P<name>\S+)\s+(?P<threat>L\S+ \S+)\s+(?P<percent>[\d.]+)%\s+(?P<robust>\d+)"
                         r"\s+(?P<seconds>[\d.]+)s")


def evaluation_from_log(log: Path, run: str) -> dict | None:
    """The whole-test-set evaluation of `run` as the stage printed it (ibrar.evaluate.format_table) in stage.log,
    for a call whose eval-full.json did not come back (the kit before it exported that piece). Robust counts are
    exact, so each attack's accuracy is too; the clean accuracy has the table's two decimals. None if absent."""
    if not log.is_file():
        return None
    blocks = [m for m in _EVAL_BLOCK.finditer(log.read_text()) if m.group("run") == run]
    if not blocks:
        return None
    lines = blocks[-1].group("table").splitlines()
    # the estimate and the one-line-per-attack progress come first; the table starts at its "n = " line
    lines = lines[next((i for i, line in enumerate(lines) if line.startswith("n = ")), 0):]
    header = re.match(r"n = (\d+) examples, seed = (\d+)", lines[0]) if lines else None
    clean = next((re.match(r"clean\s+([\d.]+)%", line) for line in lines if line.startswith("clean ")), None)
    if header is None or clean is None:
        return None
    n = int(header.group(1))
    attacks = [{"name": m["name"], "threat_model": m["threat"], "accuracy": int(m["robust"]) / n,
                "n_robust": int(m["robust"]), "seconds": float(m["seconds"])}
               for m in map(_ATTACK_ROW.match, lines[2:]) if m is not None and m["name"] != "worst"]
    return {"n": n, "seed": int(header.group(2)), "clean": round(float(clean.group(1)) / 100, 4), "attacks": attacks,
            "recovered_from": f"{log.name}: the evaluation table the call printed ({EVAL_FULL} did not come back)"}


def collect(files_at: Path, results: Path, quiet: bool = False, log: Path | None = None) -> list[Path]:
    """Copy what a device call brought back into `results/`: each finished run folder
    ($OUT/<experiment>-<scale>/<run>/, or inside the `table4`, `table1` or `fig2` stage's tarball) through `ibrar report
    collect`'s own copy (the figures' inputs with it), and a `check` stage's files to
    results/gpu-check/. A run that has not been evaluated yet stays out of results/<experiment>-<scale>/ (its stage
    is called again); how far it got goes to results/<experiment>-<scale>-partial/<run>/, since the lease may end
    first. A finished run that is one of Table 6's networks, evaluated with its attacks, is also given to
    results/table6-<scale>/ (`ibrar.report.collect_table6_view`). `log`: the call's stage.log, for a tarball's runs
    (the files_at of its unpacked copy has none).
    Returns the folders written."""
    from ibrar.errors import IbrarError  # imported here: collecting runs on this machine, where ibrar is installed
    from ibrar.report import collect_run, collect_table6_view, copy_artifacts, partial_folder
    from ibrar.run_files import CONFIG_FILE
    from ibrar.run_folder import RunFolder

    copied = []
    for packed in [files_at / name for name in TARBALLS if (files_at / name).is_file()]:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ibrar-kit-collect-") as unpacked:
            with tarfile.open(packed) as archive:
                try:
                    archive.extractall(unpacked, filter="data")
                except TypeError:  # a Python without extraction filters
                    archive.extractall(unpacked)
            copied += collect(Path(unpacked), results, quiet=True, log=files_at / "stage.log")
    for config in sorted(files_at.glob(f"*/*/{CONFIG_FILE}")):
        run = config.parent
        partial = partial_folder(results, run.parent.name) / run.name
        try:
            copied.append(collect_run(run, results / run.parent.name))
            shutil.rmtree(partial, ignore_errors=True)  # finished: the partial copy is superseded
            if (view := collect_table6_view(copied[-1], results)) is not None:  # one of Table 6's networks
                copied.append(view)
        except IbrarError as error:
            print(f"not collected: {error}")
            if RunFolder(run).metrics_file.is_file() and RunFolder(run).gpu_calls_file.is_file():
                # the lease may end before the next call: keep how far the row got (the report shows it apart)
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                copy_artifacts(run, partial)
                keep_partial_evaluation(files_at, run, partial, log)
                copied.append(partial)
    if (files_at / "check.json").is_file():
        dest = results / "gpu-check"
        dest.mkdir(parents=True, exist_ok=True)
        for name in CHECK_FILES:
            if (files_at / name).is_file():
                shutil.copyfile(files_at / name, dest / name)
        copied.append(dest)
    for path in [] if quiet else copied:
        print(f"{path}: {', '.join(sorted(p.name for p in path.iterdir()))}")
    if (files_at / "manifest.json").is_file() and not quiet:
        print(f"{files_at} holds shards of a fetch: join them with `ibrar fetch-assemble` (never into results/)")
    elif not copied and not quiet:
        print(f"nothing to collect in {files_at}: no evaluated <experiment>-<scale>/<run>/ and no check.json")
    return copied


def keep_partial_evaluation(files_at: Path, run: Path, partial: Path, log: Path | None = None) -> None:
    """A trained row whose AutoAttack piece has not run: keep its whole-test-set piece (from the call's stage.log
    if the file itself did not come back) and that log, which is its provenance."""
    # a run of a side-by-side stage (`table4`, ...) carries its own log in its folder; a `table4-ROW` call's
    # is the call's (`log`, beside the tarball the run came in)
    log = run / "stage.log" if (run / "stage.log").is_file() else log or files_at / "stage.log"
    if (run / EVAL_FULL).is_file():
        shutil.copyfile(run / EVAL_FULL, partial / EVAL_FULL)
    elif (recovered := evaluation_from_log(log, run.name)) is not None:
        (partial / EVAL_FULL).write_text(json.dumps(recovered, indent=2) + "\n")
    if (partial / EVAL_FULL).is_file() and log.is_file():
        shutil.copyfile(log, partial / log.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("size", help="what travels to the GPU machine; exit 1 above 64 MiB")
    p.add_argument("--kit", type=Path, default=DEFAULT_KIT)
    p.add_argument("--repo", type=Path, default=REPO)
    p = sub.add_parser("install", help="install carried wheels offline into a target folder")
    p.add_argument("wheels", type=Path)
    p.add_argument("site", type=Path)
    p.add_argument("--rehearsal", action="store_true")
    p = sub.add_parser("slim", help="drop a folder (e.g. bundled test data) from a wheel, RECORD included")
    p.add_argument("wheel", type=Path)
    p.add_argument("prefix")
    p = sub.add_parser("collect", help="copy a device call's results (its files_at folder) into results/")
    p.add_argument("files_at", type=Path)
    p.add_argument("--results", type=Path, default=REPO / "results")
    p = sub.add_parser("unpack", help="unpack the carried image-folder tarball")
    p.add_argument("tarball", type=Path)
    p.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "size":
        return check_size(args.repo, args.kit)
    if args.command == "install":
        install_wheels(args.wheels, args.site, args.rehearsal)
        return 0
    if args.command == "collect":
        collect(args.files_at, args.results)
        return 0
    if args.command == "slim":
        slim_wheel(args.wheel, args.prefix)
        return 0
    unpack(args.tarball, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
