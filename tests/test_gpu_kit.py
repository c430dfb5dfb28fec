"""The GPU kit (bench/gpu/) rehearsed on the CPU through the same scripts a device call runs: set-up (an offline
wheel install, the carried data), the `check` stage, a `table4-1` row that stops at its time budget and resumes
in the next call, and what comes back under $OUT; plus the 64 MiB check on what travels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_image_folder

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench" / "gpu"))

import kit  # noqa: E402

PROBE = "ibrar_kit_probe"


def make_wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel, built from nothing (enough for `pip install --no-index`)."""
    dist_info = f"{name}-0.0.0.dist-info"
    contents = {**files,
                f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n",
                f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    contents[f"{dist_info}/RECORD"] = "".join(f"{path},,\n" for path in [*contents, f"{dist_info}/RECORD"])
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> dict[str, str]:
    """A kit like prepare.sh's, but tiny: one probe wheel and a small image-folder tarball; the environment of a
    rehearsed device call (its scratch folder keeps run folders between calls, as a warm machine does)."""
    root = tmp_path_factory.mktemp("gpu-kit")
    make_wheel(root / "kit" / "wheels", PROBE, {f"{PROBE}.py": "ANSWER = 42\n"})
    images = write_image_folder(root / "images", per_class_train=8, per_class_test=8)
    with tarfile.open(root / "kit" / "cifar10-jpeg.tar.gz", "w:gz") as archive:
        archive.add(images / "train", "train")
        archive.add(images / "test", "test")
    return {**os.environ, "IBRAR_GPU_KIT": str(root / "kit"), "IBRAR_GPU_SCRATCH": str(root / "scratch"),
            "IBRAR_GPU_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "IBRAR_GPU_KIT_REHEARSAL": "1"}


def device_call(env: dict[str, str], out: Path, *stage: str, rc: int = 0, **extra: str) -> tuple[dict, str]:
    """`bash bench/gpu/run.sh STAGE` as the device tool runs it (a fresh, empty $OUT); returns stage.json, log.
    Every call's $OUT must be what the device tool returns whole (`assert_comes_back`)."""
    out.mkdir(parents=True)
    done = subprocess.run(["bash", "bench/gpu/run.sh", *stage], cwd=REPO, env={**env, "OUT": str(out), **extra},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == rc, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "stage.log").read_text() == done.stdout  # the log comes back with the results
    assert_comes_back(out)
    return json.loads((out / "stage.json").read_text()), done.stdout


def assert_comes_back(out: Path) -> None:
    """The device tool returns at most 8 files, at most two folders down."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, files
    assert all(len(p.relative_to(out).parts) <= 3 for p in files), files


def unpacked(out: Path, name: str = "table4.tar.gz") -> Path:
    """The run folders a call packed into its tarball, unpacked beside its $OUT."""
    dest = out.with_name(f"{out.name}-unpacked")
    with tarfile.open(out / name) as archive:
        archive.extractall(dest, filter="data")
    return dest


def test_check_stage_rehearses_the_cuda_tests_and_the_fast_path_bench(rehearsal, tmp_path):
    stage, log = device_call(rehearsal, tmp_path / "out", "check")
    out = tmp_path / "out"
    assert stage["status"] == "finished" and stage["rehearsal"] and stage["next"] == ""
    assert {"device", "torch", "minutes"} <= set(stage)
    check = json.loads((out / "check.json").read_text())
    tests = check["cuda_tests"]
    assert tests["tests"] > 20 and tests["skipped"] == tests["tests"]  # no GPU here: every CUDA test skips
    assert check["goals"]["sync_free"] is True
    assert {g["goal"] for g in check["goals"]["issue_25"]} >= {"CE + IB-RAR step", "PGD-AT + IB-RAR step"}
    text = (out / "check.md").read_text()
    assert "| fp32 |" in text and "## The next call" in text
    # no GPU here: the graph step's tests did not run, so the advice is the eager step and row (6) alone
    assert stage["advice"] == check["advice"]["command"] and not check["advice"]["graph"]
    assert stage["advice"].endswith("IBRAR_GPU_OVERRIDES=train.cuda_graph=false IBRAR_GPU_BUDGET_S=B bash "
                                    "bench/gpu/run.sh table4 6")
    # the set-up installed the carried wheel offline into the scratch site folder
    assert stage["wheels"]["installed"] == [f"{PROBE}-0.0.0-py3-none-any.whl"]
    assert (Path(rehearsal["IBRAR_GPU_SCRATCH"]) / "site" / f"{PROBE}.py").is_file()
    assert "== check: FINISHED" in log and "of 64 MiB: fits" in log  # the size check runs in a rehearsal
    assert_comes_back(out)
    assert kit.collect(out, tmp_path / "results") == [tmp_path / "results" / "gpu-check"]
    assert (tmp_path / "results" / "gpu-check" / "check.json").is_file()
    assert (tmp_path / "results" / "gpu-check" / "cuda-tests.xml").read_bytes() == (out / "cuda-tests.xml").read_bytes()


def test_table4_row_stops_at_its_time_budget_resumes_in_the_next_call_and_exports_its_run(rehearsal, tmp_path):
    run = Path("table4-smoke") / "vgg16-1-ce"
    first, log = device_call(rehearsal, tmp_path / "call1", "table4-1", IBRAR_GPU_TRAIN_UNTIL_S="0")
    assert first["next"] == "bash bench/gpu/run.sh table4-1" and "call again" in first["status"]
    assert "CALL AGAIN" in log
    # the run folder packed (it may hold 9 files; a call returns 8): with stage.json and stage.log, 3 files back
    assert sorted(p.name for p in (tmp_path / "call1").iterdir()) == ["stage.json", "stage.log", "table4.tar.gz"]
    assert_comes_back(tmp_path / "call1")
    exported = unpacked(tmp_path / "call1") / run
    assert (exported / "config.yaml").is_file() and not (exported / "eval.json").exists()
    assert not list((tmp_path / "call1").rglob("*.pt"))  # never checkpoints
    assert kit.collect(tmp_path / "call1", tmp_path / "results") == []  # not evaluated yet: stays out of results/

    # trained, and the whole test set evaluated, but too little time left for AutoAttack's subset
    second, log = device_call(rehearsal, tmp_path / "call2", "table4-1", IBRAR_GPU_EVAL_SUBSET_S="1e6",
                              IBRAR_GPU_CALL_S="240")  # a call shorter than 10 minutes
    assert second["epochs_done"] == 1 and "eval-n" in second["status"] and "CALL AGAIN" in log
    assert_comes_back(tmp_path / "call2")
    exported = unpacked(tmp_path / "call2") / run
    from ibrar.run_files import PARTIAL_EVAL_FILE

    assert kit.EVAL_FULL == PARTIAL_EVAL_FILE  # the file the kit returns is the one the report reads
    full = json.loads((exported / kit.EVAL_FULL).read_text())  # the piece comes back: the lease may end now
    assert not (exported / "eval.json").exists()
    partial = tmp_path / "results" / "table4-smoke-partial" / run.name
    assert kit.collect(tmp_path / "call2", tmp_path / "results") == [partial]
    assert json.loads((partial / kit.EVAL_FULL).read_text()) == full and (partial / "stage.log").is_file()
    # a call of the kit before it exported that piece (nor packed the run): the same numbers, from the table
    # stage.log printed
    old = tmp_path / "old-call2"
    shutil.copytree(exported, old / run)
    shutil.copyfile(tmp_path / "call2" / "stage.log", old / "stage.log")
    (old / run / kit.EVAL_FULL).unlink()
    assert kit.collect(old, tmp_path / "results") == [partial]
    recovered = json.loads((partial / kit.EVAL_FULL).read_text())
    assert recovered["n"] == full["n"] and recovered["seed"] == full["seed"] and "stage.log" in recovered[
        "recovered_from"]
    assert recovered["clean"] == pytest.approx(full["clean"], abs=5e-5)
    assert [(a["name"], a["n_robust"]) for a in recovered["attacks"]] == [
        (a["name"], a["n_robust"]) for a in full["attacks"]]
    assert [a["accuracy"] for a in recovered["attacks"]] == pytest.approx([a["accuracy"] for a in full["attacks"]])

    third, log = device_call(rehearsal, tmp_path / "call3", "table4-1", IBRAR_GPU_AA_N="20")  # a short lease's n
    assert third["status"] == "finished" and third["epochs_done"] == third["epochs"] == 1
    assert "== table4-1: FINISHED" in log and "(found: evaluate)" in log
    assert_comes_back(tmp_path / "call3")
    exported = unpacked(tmp_path / "call3") / run
    assert sorted(p.name for p in exported.iterdir()) == sorted(  # row 1: Figure 3's features too
        ["config.yaml", "meta.json", "metrics.jsonl", "info_plane.jsonl", "eval.json", "gpu.json",
         "tsne-features.npz"])
    evaluation = json.loads((exported / "eval.json").read_text())
    names = [a["name"] for a in evaluation["attacks"]]
    assert names == ["pgd2", "nifgsm2", "fgsm", "apgd-ce3"]  # the smoke scale's pgd10, nifgsm, fgsm, autoattack
    subset_entry = evaluation["attacks"][-1]
    assert subset_entry["n"] == evaluation["subsets"]["n20"]["n"] == 20 < evaluation["n"]  # n: the whole set
    gpu = json.loads((exported / "gpu.json").read_text())
    assert [c["status"] == "finished" for c in gpu["calls"]] == [False, False, True]
    assert gpu["minutes_total"] == pytest.approx(sum(c["minutes"] for c in gpu["calls"]), abs=0.02)
    # back here, into results/<experiment>-<scale>/<run>/, where the report command reads runs
    assert kit.collect(tmp_path / "call3", tmp_path / "results") == [tmp_path / "results" / run,
                                                                       tmp_path / "results/table6-smoke/plain-ce"]
    assert (tmp_path / "results" / run / "eval.json").read_text() == (exported / "eval.json").read_text()
    assert not partial.exists()  # superseded by the finished row
    # Figure 3 from results/ (no weights there): the features the machine computed from the weights, in fp16
    from ibrar.figure_data import features_of, penultimate_features

    trained = Path(rehearsal["IBRAR_GPU_SCRATCH"]) / "runs" / run
    assert (trained / "final.pt").is_file() and not (tmp_path / "results" / run / "final.pt").exists()
    got = features_of(tmp_path / "results" / run, n=32)
    want = penultimate_features(trained, rehearsal["IBRAR_GPU_SCRATCH"] + "/data/cifar10-jpeg", n=32)
    assert got.features.shape == want.features.shape == (32, want.features.shape[1])
    assert (got.labels == want.labels).all() and got.classes == want.classes
    assert np.allclose(got.features, want.features, rtol=2e-3, atol=1e-4)


def test_collect_keeps_a_partly_trained_row_apart_and_drops_it_once_the_row_is_finished(tmp_path):
    from test_report import fake_run, partial_run

    files_at, results = tmp_path / "files", tmp_path / "results"
    run = partial_run(files_at / "table4-paper", "vgg16-6-ibrar", 3)
    partial = results / "table4-paper-partial" / "vgg16-6-ibrar"
    assert kit.collect(files_at, results) == [partial]  # not evaluated: kept apart, not in results/table4-paper/
    assert sorted(p.name for p in partial.iterdir()) == ["config.yaml", "gpu.json", "metrics.jsonl"]
    finished = fake_run(tmp_path / "finished", "vgg16-6-ibrar", 60.0, {"pgd10": 30.0})
    for name in ("meta.json", "eval.json"):  # the row trained to the end and evaluated in a later call
        shutil.copy2(finished / name, run / name)
    assert kit.collect(files_at, results) == [results / "table4-paper" / "vgg16-6-ibrar"]
    assert not partial.exists()


def test_the_call_length_and_the_last_call_set_when_training_stops_and_the_stage_ends(monkeypatch):
    import stages

    def limits() -> tuple[float, ...]:
        ctx = stages.Context.from_env("table4-6")
        return ctx.train_until, ctx.call_limit, ctx.eval_full_s, ctx.eval_subset_s

    for name in ("CALL_S", "LAST_CALL", "TRAIN_UNTIL_S", "CALL_LIMIT_S", "EVAL_FULL_S", "EVAL_SUBSET_S", "BUDGET_S"):
        monkeypatch.delenv(f"IBRAR_GPU_{name}", raising=False)
    assert limits() == (570, 570, None, None)  # a 10-minute call, another one after it: the estimates decide
    # the lease's budget alone plans the call: all of it (at most 10 minutes), and the last call when what it
    # leaves could not hold another
    monkeypatch.setenv("IBRAR_GPU_BUDGET_S", "900")
    assert limits() == (570, 570, None, None) and not stages._last_call()
    monkeypatch.setenv("IBRAR_GPU_BUDGET_S", "700")
    assert stages._call_seconds() == 600 and stages._last_call() and limits() == (570, 570, 0, 0)
    monkeypatch.setenv("IBRAR_GPU_BUDGET_S", "315")
    assert stages._call_seconds() == 300 and limits() == (270, 270, 0, 0)
    monkeypatch.delenv("IBRAR_GPU_BUDGET_S")
    monkeypatch.setenv("IBRAR_GPU_CALL_S", "300")
    assert limits() == (270, 270, None, None)
    monkeypatch.setenv("IBRAR_GPU_LAST_CALL", "1")  # nothing follows: try every piece whatever time is left
    assert limits() == (270, 270, 0, 0)
    monkeypatch.setenv("IBRAR_GPU_TRAIN_UNTIL_S", "250")  # a knob set on its own wins
    assert limits()[0] == 250


def test_a_rehearsal_under_another_python_skips_wheels_whose_module_already_imports(tmp_path):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "pytest", {"pytest_shadow.py": ""})  # `pytest` imports here
    other = "cp39" if sys.version_info[:2] != (3, 9) else "cp38"
    (wheels / f"numpy-0.0.0-{other}-{other}-manylinux_2_17_x86_64.whl").write_bytes(b"")  # a build for another Python
    assert kit.install_wheels(wheels, tmp_path / "site", rehearsal=True) == []
    assert not (tmp_path / "site").exists()


def test_a_rehearsal_under_the_machines_python_installs_every_wheel_as_the_machine_does(tmp_path):
    # A replica of the machine's Python (every carried wheel fits it) must shadow its own packages as the machine
    # does: a skipped typing_extensions once hid that pydantic_core needs a newer one than the replica's own.
    wheels = tmp_path / "wheels"
    wheel = make_wheel(wheels, "pytest", {"pytest_shadow.py": ""})
    assert kit.install_wheels(wheels, tmp_path / "site", rehearsal=True) == [wheel.name]
    assert (tmp_path / "site" / "pytest_shadow.py").is_file()


def test_a_wheel_fits_this_python_when_pure_or_built_for_it():
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert kit.fits_this_python(Path("a-1.0-py3-none-any.whl"))
    assert kit.fits_this_python(Path(f"a-1.0-{here}-{here}-manylinux_2_17_x86_64.whl"))
    assert not kit.fits_this_python(Path("a-1.0-cp27-cp27mu-manylinux1_x86_64.whl"))


def test_slimming_a_wheel_drops_a_folder_and_its_record_lines(tmp_path):
    files = {f"{PROBE}/__init__.py": "", f"{PROBE}/examples/model.pt": "x" * 5000}
    wheel = make_wheel(tmp_path / "wheels", PROBE, files)
    assert kit.slim_wheel(wheel, f"{PROBE}/examples/") > 0
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = archive.read(f"{PROBE}-0.0.0.dist-info/RECORD").decode()
    assert f"{PROBE}/__init__.py" in names and not any("examples" in n for n in names + record.splitlines())
    assert kit.install_wheels(tmp_path / "wheels", tmp_path / "site") == [wheel.name]
    assert (tmp_path / "site" / PROBE / "__init__.py").is_file()


def test_what_travels_is_measured_and_refused_above_the_limit(tmp_path, capsys):
    empty_kit = tmp_path / ".gpu-kit"
    (empty_kit / "wheels").mkdir(parents=True)
    (empty_kit / "wheels" / "a.whl").write_bytes(b"x" * 4096)
    total, breakdown = kit.travel_size(REPO, empty_kit)
    assert breakdown[".gpu-kit/wheels"] == 4096
    assert total - 4096 == breakdown["working tree (tracked + untracked, not ignored)"] > 0
    assert kit.check_size(REPO, empty_kit) == 0  # the checkout itself is far below 64 MiB
    assert kit.check_size(REPO, empty_kit, limit=total - 1) == 1
    assert "TOO LARGE" in capsys.readouterr().out
    # the kit folder is ignored by git: it travels only when carried, and is never committed
    ignored = subprocess.run(["git", "check-ignore", "-q", ".gpu-kit/wheels/x.whl"], cwd=REPO)
    assert ignored.returncode == 0


def test_table4_stage_trains_rows_side_by_side_packs_them_and_fetch_brings_a_row_back_in_shards(rehearsal,
                                                                                                tmp_path):
    """The six-row stage (two rows here, row (6) with a second seed: `table4 1,6-seed1`) with the authors'
    optimizer: cut off at once, then called again to the end; each call returns one tarball (3 files). Then
    `fetch 6-seed1` over two calls, and `ibrar fetch-assemble` joins and loads the weights; a corrupt shard is
    named."""
    from ibrar.checkpoint import load_file
    from ibrar.cli import main

    env = {**rehearsal, "IBRAR_GPU_RUNS": str(tmp_path / "runs"), "IBRAR_GPU_OPTIM": "authors",
           "IBRAR_GPU_AA_N": "20"}
    first, log = device_call(env, tmp_path / "call1", "table4", "1,6-seed1", IBRAR_GPU_TRAIN_UNTIL_S="0")
    assert "call again" in first["status"]
    assert first["next"] == "IBRAR_GPU_OPTIM=authors bash bench/gpu/run.sh table4 1,6-seed1"
    assert sorted(p.name for p in (tmp_path / "call1").iterdir()) == ["stage.json", "stage.log", "table4.tar.gz"]
    assert [r["side_by_side"] for r in first["rows"]] == [2, 2] and "CALL AGAIN" in log
    results = tmp_path / "results"
    with tarfile.open(tmp_path / "call1" / "table4.tar.gz") as archive:
        packed = archive.getnames()
    for run in ("vgg16-1-ce-authors-optim", "vgg16-6-ibrar-authors-optim-seed1"):  # each row's folder and its own log
        assert {f"table4-smoke/{run}/{name}" for name in ("config.yaml", "gpu.json", "stage.log")} <= set(packed)
    assert kit.collect(tmp_path / "call1", results) == []  # no epoch finished: nothing to keep yet

    second, log = device_call(env, tmp_path / "call2", "table4", "1,6-seed1")
    assert second["status"] == "finished" and "== table4 1,6-seed1: FINISHED" in log
    assert all(r["status"] == "finished" and r["epoch_seconds_median"] > 0 for r in second["rows"])
    assert_comes_back(tmp_path / "call2")
    collected = kit.collect(tmp_path / "call2", results)
    folder, table6 = results / "table4-smoke", results / "table6-smoke"
    assert collected == [folder / "vgg16-1-ce-authors-optim", table6 / "plain-ce-authors-optim",
                         folder / "vgg16-6-ibrar-authors-optim-seed1", table6 / "plain-ibrar-authors-optim-seed1"]
    # rows (1) and (6) are Table 6's plain networks: its attacks ran with AutoAttack on the same seeded 20, and
    # Table 6's copy has that subset's evaluation as its eval.json
    view = json.loads((table6 / "plain-ibrar-authors-optim-seed1" / "eval.json").read_text())
    subset = json.loads((folder / "vgg16-6-ibrar-authors-optim-seed1" / "eval.json").read_text())["subsets"]["n20"]
    assert [a["name"] for a in view["attacks"]] == ["pgd2", "nifgsm2", "fgsm", "apgd-ce3", "adaptive2", "adaptive3"]
    assert view["attacks"] == subset["attacks"] and view["n"] == 20 and view["seed"] == 1
    assert ((table6 / "plain-ibrar-authors-optim-seed1" / "config.yaml").read_text()
            == (folder / "vgg16-6-ibrar-authors-optim-seed1" / "config.yaml").read_text())
    assert not (table6 / "plain-ibrar-authors-optim-seed1" / "tsne-features.npz").exists()
    assert not (results / "table4-smoke-partial" / "vgg16-6-ibrar-authors-optim-seed1").exists()
    row6 = folder / "vgg16-6-ibrar-authors-optim-seed1"
    assert {"eval.json", "confusion-pgd10.json", "tsne-features.npz"} <= {p.name for p in row6.iterdir()}
    assert "adaptive2" not in [a["name"] for a in json.loads((row6 / "eval.json").read_text())["attacks"]]
    config = (row6 / "config.yaml").read_text()
    assert "momentum: 0.9" in config and "weight_decay: 0.0" in config  # the authors' optimizer
    assert "seed: 1" in config and json.loads((row6 / "eval.json").read_text())["seed"] == 1  # trained, evaluated
    confusion = json.loads((row6 / "confusion-pgd10.json").read_text())
    assert confusion["n"] == 32 and sum(map(sum, confusion["counts"])) == 32 and confusion["steps"] == 10
    from ibrar.figure_data import confusion_of

    assert confusion_of(row6, n=32).counts.tolist() == confusion["counts"]  # Table 5 from results/, no weights

    # fetch: the weights in shards, over two calls; then joined, checked and loaded here
    calls = [tmp_path / "fetch0", tmp_path / "fetch1"]
    reply, log = device_call(env, calls[0], "fetch", "6-seed1")
    assert reply["next"] == "IBRAR_GPU_OPTIM=authors bash bench/gpu/run.sh fetch 6-seed1 4" and "CALL AGAIN" in log
    assert "installed into" not in log  # a fetch call installs nothing and unpacks nothing: it must be short
    reply, log = device_call(env, calls[1], "fetch", "6-seed1", "4")
    assert reply["status"] == "finished" and reply["count"] > 4 and reply["shards"][-1] == reply["count"] - 1
    for out in calls:
        assert_comes_back(out)
    fetched = calls
    into = tmp_path / "assembled"
    assert main(["fetch-assemble", *map(str, fetched), "--into", str(into)]) == 0
    trained = tmp_path / "runs" / "table4-smoke" / "vgg16-6-ibrar-authors-optim-seed1" / "final.pt"
    assert (into / "final.pt").read_bytes() == trained.read_bytes()
    weights = load_file(into / "final.pt")["model"]
    assert weights and all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())

    shard = sorted(fetched[1].glob("final.pt.shard-*"))[0]
    shard.write_bytes(b"x" + shard.read_bytes()[1:])
    assert main(["fetch-assemble", *map(str, fetched), "--into", str(tmp_path / "corrupt")]) == 2
    assert not (tmp_path / "corrupt" / "final.pt").exists()


def test_table1_stage_trains_the_pgd_at_pair_side_by_side_and_brings_both_back_evaluated(rehearsal, tmp_path):
    """`table1`: Table 1's PGD-AT pair in one call (3 files back), each run evaluated with the paper's attacks on
    the whole test set and AutoAttack on a seeded subset, collected into results/table1-<scale>/; then a run's
    weights by `fetch table1-RUN`."""
    env = {**rehearsal, "IBRAR_GPU_RUNS": str(tmp_path / "runs"), "IBRAR_GPU_AA_N": "20"}
    reply, log = device_call(env, tmp_path / "call", "table1")
    assert reply["status"] == "finished" and "== table1: FINISHED" in log
    assert [r["row"] for r in reply["rows"]] == ["pgd_at", "pgd_at-ibrar"]
    assert reply["tarball"]["name"] == "table1.tar.gz"
    assert sorted(p.name for p in (tmp_path / "call").iterdir()) == ["stage.json", "stage.log", "table1.tar.gz"]
    folder = tmp_path / "results" / "table1-smoke"
    assert kit.collect(tmp_path / "call", tmp_path / "results") == [folder / "vgg16-cifar10-pgd_at",
                                                                      folder / "vgg16-cifar10-pgd_at-ibrar",
                                                                      tmp_path / "results/table6-smoke/at-ibrar"]
    view = json.loads((tmp_path / "results/table6-smoke/at-ibrar/eval.json").read_text())
    assert [a["name"] for a in view["attacks"]][-3:] == ["apgd-ce3", "adaptive2", "adaptive3"] and view["n"] == 20
    evaluation = json.loads((folder / "vgg16-cifar10-pgd_at-ibrar" / "eval.json").read_text())
    # the smoke scale's pgd10, cw, fgsm, fab, nifgsm on the whole test set; its autoattack on the seeded 20
    assert [a["name"] for a in evaluation["attacks"]] == ["pgd2", "cw3", "fgsm", "fab2", "nifgsm2", "apgd-ce3"]
    assert evaluation["attacks"][-1]["n"] == 20 < evaluation["n"]
    config = (folder / "vgg16-cifar10-pgd_at-ibrar" / "config.yaml").read_text()
    assert "name: pgd_at" in config and "momentum: 0.0" in config  # the AT config's own optimizer
    reply, log = device_call(env, tmp_path / "fetch", "fetch", "table1-pgd_at-ibrar")
    assert reply["run"] == "table1-smoke/vgg16-cifar10-pgd_at-ibrar" and "CALL AGAIN" in log
    assert reply["next"] == "bash bench/gpu/run.sh fetch table1-pgd_at-ibrar 4"


def test_fig2_stage_evaluates_its_networks_with_the_attack_steps_curves_on_the_whole_test_set(rehearsal, tmp_path):
    env = {**rehearsal, "IBRAR_GPU_RUNS": str(tmp_path / "runs"), "IBRAR_GPU_AA_N": "20", "IBRAR_GPU_OPTIM": "authors"}
    reply, log = device_call(env, tmp_path / "call", "fig2", "ce,hbar")
    assert reply["status"] == "finished" and reply["tarball"]["name"] == "fig2.tar.gz"
    folder = tmp_path / "results" / "fig2-smoke"
    assert kit.collect(tmp_path / "call", tmp_path / "results") == [folder / "ce-authors-optim",
                                                                      folder / "hbar-authors-optim"]
    evaluation = json.loads((folder / "hbar-authors-optim" / "eval.json").read_text())
    assert sorted(evaluation["curves"]) == ["cw", "nifgsm", "pgd"]
    assert sorted(evaluation["curves"]["pgd"]) == ["1", "2"]  # the smoke scale's steps (the paper's: 1 ... 50)
    # the curves came with the whole-test-set piece, not with AutoAttack's seeded 20
    assert evaluation["attacks"][-1]["n"] == 20 < evaluation["n"] and "curves" not in evaluation["subsets"]["n20"]
    assert "momentum: 0.9" in (folder / "hbar-authors-optim" / "config.yaml").read_text()


def test_a_table1_run_refuses_the_optimizer_knob_of_table4(monkeypatch):
    import stages

    monkeypatch.setenv("IBRAR_GPU_OPTIM", "authors")
    monkeypatch.setenv("IBRAR_GPU_KIT_REHEARSAL", "1")
    ctx = stages.Context.from_env("table1-pgd_at")
    with pytest.raises(SystemExit, match="IBRAR_GPU_OPTIM=authors is for Table 4's rows; table1's configs"):
        stages.stage_run(ctx, {}, "pgd_at", "table1")


def test_runs_are_named_by_stage_without_their_prefix_and_a_whole_name_wins():
    import stages

    from ibrar.experiments import build_experiment

    table1, table4 = build_experiment("table1", "paper"), build_experiment("table4", "paper")
    assert [stages.find_row(table1, r, "table1").name for r in ("pgd_at", "pgd_at-ibrar", "vgg16-cifar10-mart")] == [
        "vgg16-cifar10-pgd_at", "vgg16-cifar10-pgd_at-ibrar", "vgg16-cifar10-mart"]
    assert [stages.find_row(table4, r).name for r in ("6", "2-ib", "resnet18-6")] == [
        "vgg16-6-ibrar", "vgg16-2-ib", "resnet18-6-ibrar"]
    with pytest.raises(SystemExit, match="table1 row 'vgg16-tinyimagenet-pgd_at': expected one of"):
        stages.find_row(table1, "vgg16-tinyimagenet-pgd_at", "table1")  # the kit carries CIFAR-10 only
    assert stages.experiment_of("table1-pgd_at-ibrar") == ("table1", "pgd_at-ibrar")
    assert stages.experiment_of("table4") == ("table4", None) and stages.experiment_of("fetch") == ("", None)
    from side_by_side import tarball_name

    # kit.py (standard library only, imported by stages.py) spells the tarballs out: one per kit experiment
    assert kit.TARBALLS == tuple(tarball_name(name) for name in stages.EXPERIMENTS)


def test_fetch_finds_the_folder_of_the_row_seed_and_optimizer_asked_for(tmp_path, monkeypatch):
    """Beside one another on a warm machine: a row's seeds and optimizers; `fetch 6` is seed 0 of the knob's."""
    import fetch
    from stages import Context

    folder = tmp_path / "table4-paper"
    for name in ("vgg16-6-ibrar", "vgg16-6-ibrar-seed1", "vgg16-6-ibrar-authors-optim",
                 "vgg16-6-ibrar-authors-optim-seed1", "vgg16-1-ce-seed1"):
        (folder / name).mkdir(parents=True)
    ctx = Context("fetch", tmp_path / "out", False, 0.0, tmp_path, tmp_path)
    rows = ("6", "6-seed1", "vgg16-6-ibrar-seed1")
    monkeypatch.setenv("IBRAR_GPU_OPTIM", "paper")
    assert [fetch.find_run(ctx, row).name for row in (*rows, "1-seed1")] == [
        "vgg16-6-ibrar", "vgg16-6-ibrar-seed1", "vgg16-6-ibrar-seed1", "vgg16-1-ce-seed1"]
    monkeypatch.setenv("IBRAR_GPU_OPTIM", "authors")
    assert [fetch.find_run(ctx, row).name for row in rows] == [
        "vgg16-6-ibrar-authors-optim", "vgg16-6-ibrar-authors-optim-seed1", "vgg16-6-ibrar-authors-optim-seed1"]
    with pytest.raises(SystemExit, match=r"fetch 1-seed1: expected one run folder of that row .* found \[\]"):
        fetch.find_run(ctx, "1-seed1")
    # the other optimizer's folder is there: the error says which knob finds it, and the README shows that fetch
    (folder / "vgg16-2-ib").mkdir()
    with pytest.raises(SystemExit, match=r"found \[\]; IBRAR_GPU_OPTIM=paper bash bench/gpu/run.sh fetch 2 finds "
                                         r"\['vgg16-2-ib'\]"):
        fetch.find_run(ctx, "2")
    monkeypatch.setenv("IBRAR_GPU_OPTIM", "paper")
    with pytest.raises(SystemExit, match=r"fetch 1: .* IBRAR_GPU_OPTIM=authors bash bench/gpu/run.sh fetch 1 finds "
                                         r"\['vgg16-1-ce-authors-optim'\]"):
        (folder / "vgg16-1-ce-authors-optim").mkdir()
        fetch.find_run(ctx, "1")
    assert "`IBRAR_GPU_OPTIM=authors bash bench/gpu/run.sh fetch 6`" in (REPO / "bench/gpu/README.md").read_text()


def test_assembling_names_a_corrupt_or_missing_shard(tmp_path):
    from ibrar.shards import ShardError, assemble, split

    source = tmp_path / "final.pt"
    source.write_bytes(bytes(range(256)) * 40)
    first = split(source, tmp_path / "a", 0, 2, shard_bytes=4000)
    assert first["count"] == 3 and first["here"] == [0, 1] and first["next_first"] == 2
    with pytest.raises(ShardError, match="shards missing: final.pt.shard-002-of-003"):
        assemble([tmp_path / "a"], tmp_path / "out" / "final.pt")
    split(source, tmp_path / "b", 2, 2, shard_bytes=4000)
    assemble([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "final.pt")
    assert (tmp_path / "out" / "final.pt").read_bytes() == source.read_bytes()
    bad = tmp_path / "a" / "final.pt.shard-001-of-003"
    bad.write_bytes(bad.read_bytes()[:-1] + b"!")
    with pytest.raises(ShardError, match="shard .*final.pt.shard-001-of-003: its sha256"):
        assemble([tmp_path / "a", tmp_path / "b"], tmp_path / "again" / "final.pt")
    assert not list((tmp_path / "again").iterdir())


def test_assembled_weights_get_their_sha256_sidecar_and_never_replace_other_weights(tmp_path):
    from ibrar.integrity import recorded_digests, sidecar
    from ibrar.shards import ShardError, assemble, split

    source = tmp_path / "final.pt"
    source.write_bytes(bytes(range(256)) * 40)
    manifest = split(source, tmp_path / "a", 0, 3, shard_bytes=4000)
    out = tmp_path / "run" / "final.pt"
    assemble([tmp_path / "a"], out)
    assert recorded_digests(out) == [manifest["sha256"]]
    assemble([tmp_path / "a"], out)  # the same weights again: fine
    other = tmp_path / "other" / "final.pt"
    other.parent.mkdir()
    other.write_bytes(b"a trained run's own weights")
    with pytest.raises(ShardError, match="already holds other weights"):
        assemble([tmp_path / "a"], other)
    assert other.read_bytes() == b"a trained run's own weights" and not sidecar(other).exists()
    (tmp_path / "a" / "manifest.json").write_text('{"sha256": "ab", "sha')  # cut short in a transfer
    with pytest.raises(ShardError, match="not a readable manifest"):
        assemble([tmp_path / "a"], tmp_path / "again" / "final.pt")


def test_a_row_that_fails_in_the_table4_stage_is_named_with_its_error_in_the_calls_log(rehearsal, tmp_path):
    stage, log = device_call({**rehearsal, "IBRAR_GPU_RUNS": str(tmp_path / "runs")}, tmp_path / "out", "table4",
                             "99")
    # a row that refused fails the same way when called again: failed, with no call to repeat
    assert stage["status"].startswith("failed: row 99: table4 row '99': expected one of")
    assert stage["rows"][0]["exit_code"] != 0 and stage["next"] == "(fix the error; see stage.log)"
    assert "| error: table4 row '99'" in log  # the row's own log, quoted where the reply's tail shows it
    assert "FAILED" in log and "CALL AGAIN" not in log


def test_a_stage_that_refuses_is_recorded_failed_with_its_message_not_as_stopped_to_call_again(rehearsal,
                                                                                               tmp_path):
    """SystemExit (an unknown row, a run of another config, the optimizer knob for Table 1, fetch finding no run
    folder) is the stage's own refusal: the same call would refuse again, so `next` must not repeat it."""
    env = {**rehearsal, "IBRAR_GPU_RUNS": str(tmp_path / "runs")}
    stage, log = device_call(env, tmp_path / "row", "table4-99", rc=1)
    assert stage["status"].startswith("failed: table4 row '99': expected one of")
    assert stage["next"] == "(fix the error; see stage.log)" and stage["exit_code"] == 1
    assert "CALL AGAIN" not in log
    stage, log = device_call(env, tmp_path / "fetch", "fetch", "6", rc=1)
    assert stage["status"].startswith("failed: fetch 6: expected one run folder of that row")
    assert stage["next"] == "(fix the error; see stage.log)" and "CALL AGAIN" not in log


def test_a_fetch_call_fits_what_a_device_call_returns():
    """4 shards of 15 MiB, the manifest, stage.json and stage.log: at most 8 files, each under 16 MiB, under 64 MiB
    in all; so VGG16's final.pt (about 130 MB) comes back in 3 calls."""
    import fetch

    from ibrar.shards import SHARD_BYTES

    assert SHARD_BYTES < 16 * 2**20 and fetch.SHARDS_PER_CALL + 3 <= 8
    assert fetch.SHARDS_PER_CALL * SHARD_BYTES + 2**20 < 64 * 2**20
    assert -(-130_000_000 // (fetch.SHARDS_PER_CALL * SHARD_BYTES)) == 3


def test_the_check_stage_runs_every_test_file_that_has_cuda_tests():
    import re

    import cuda_check

    uses_the_marker = re.compile(r"^\s*(@pytest\.mark\.cuda|pytestmark\s*=.*pytest\.mark\.cuda)", re.M)
    marked = {f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py") if uses_the_marker.search(p.read_text())}
    assert marked == set(cuda_check.CUDA_TESTS)


def test_the_check_stage_writes_the_tests_results_before_the_benchmark_starts(tmp_path, monkeypatch):
    """A call that ends inside the benchmark (the lease's clock, a crash) still brings back the CUDA tests."""
    import cuda_check
    from stages import Context

    import bench_fast_path

    tests = {"tests": 3, "failures": 0, "errors": 0, "skipped": 0, "passed": 3, "seconds": 1.0, "failed": [],
             "exit_code": 0}
    monkeypatch.setattr(cuda_check, "run_cuda_tests", lambda ctx, timeout: tests)

    def ends_inside(args, so_far=None):
        check = json.loads((tmp_path / "check.json").read_text())
        assert check["cuda_tests"] == tests and check["fast_path"]["args"] == args
        assert "Fast-path benchmark: started, not finished in this call." in (tmp_path / "check.md").read_text()
        raise TimeoutError("the call ended")

    monkeypatch.setattr(bench_fast_path, "main", ends_inside)
    ctx = Context("check", tmp_path, True, 0.0, tmp_path / "data", tmp_path / "runs")
    with pytest.raises(TimeoutError):
        cuda_check.stage_check(ctx, {"device": "CPU", "torch": torch.__version__, "cuda": None})


def test_the_check_advises_the_eager_step_where_the_graph_tests_failed_and_six_rows_only_for_a_fast_step():
    import cuda_check

    passed = {"tests": 40, "failures": 0, "errors": 0, "failed": [], "failed_modules": [],
              "passed_modules": ["tests.test_cuda", "tests.test_graph_step"]}
    graph_failed = {**passed, "failures": 1, "failed": ["test_cuda_graph_replay_equals_eager[ce]: differs"],
                    "failed_modules": ["tests.test_graph_step"]}
    other_failed = {**passed, "failures": 1, "failed_modules": ["tests.test_cuda"]}
    skipped = {**passed, "passed_modules": ["tests.test_cuda"]}
    fast = {"step_ms/fp32/CE + IB-RAR": 9.0, "step_ms/fp32 + graph/CE + IB-RAR": 1.5}
    slow = {"step_ms/fp32/CE + IB-RAR": 9.0, "step_ms/fp32 + graph/CE + IB-RAR": 4.0}
    run = "IBRAR_GPU_BUDGET_S=B bash bench/gpu/run.sh table4"
    assert cuda_check.training_advice(passed, fast)["command"] == f"IBRAR_GPU_OPTIM=authors {run}"
    assert cuda_check.training_advice(other_failed, fast)["command"] == f"IBRAR_GPU_OPTIM=authors {run}"
    assert cuda_check.training_advice(passed, slow)["command"] == f"IBRAR_GPU_OPTIM=authors {run} 6"
    # a graph replay that failed its test against eager must not train a row: eager, judged on the eager step
    advice = cuda_check.training_advice(graph_failed, fast)
    assert not advice["graph"] and advice["command"] == (
        f"IBRAR_GPU_OPTIM=authors IBRAR_GPU_OVERRIDES=train.cuda_graph=false {run} 6")
    assert cuda_check.training_advice({"error": "no cuda-tests.xml"}, fast)["graph"] is False  # unverified
    assert cuda_check.training_advice(skipped, fast)["graph"] is False
    assert cuda_check.training_advice(passed, {})["command"].endswith("table4 6")  # no benchmark: one row


def test_a_call_again_line_repeats_the_config_overrides_a_row_started_with(monkeypatch):
    """A row resumes only with its first call's config, so the next line carries IBRAR_GPU_OVERRIDES as well."""
    from stages import next_command

    monkeypatch.setenv("IBRAR_GPU_OPTIM", "authors")
    monkeypatch.delenv("IBRAR_GPU_OVERRIDES", raising=False)
    assert next_command(["table4", "6"]) == "IBRAR_GPU_OPTIM=authors bash bench/gpu/run.sh table4 6"
    monkeypatch.setenv("IBRAR_GPU_OVERRIDES", "train.cuda_graph=false train.threads=4")
    assert next_command(["table4"]) == ("IBRAR_GPU_OPTIM=authors IBRAR_GPU_OVERRIDES='train.cuda_graph=false "
                                        "train.threads=4' bash bench/gpu/run.sh table4")


class Escaped(Exception):
    """SIGTERM reached the test's own handler: the stage ran its evaluation without one."""


def check_catching_sigterm(tmp_path: Path) -> tuple[str, dict]:
    """The rehearsed check stage, where a SIGTERM its own handling misses raises Escaped instead of ending pytest."""
    import cuda_check
    from stages import Context

    def escaped(signum, frame):
        raise Escaped

    ctx = Context("check", tmp_path, True, time.time(), tmp_path / "data", tmp_path / "runs")
    previous = signal.signal(signal.SIGTERM, escaped)
    try:
        return cuda_check.stage_check(ctx, {"device": "CPU", "torch": torch.__version__, "cuda": None})
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_during_the_evaluation_still_records_and_exports_what_is_done(rehearsal, tmp_path, monkeypatch,
                                                                                image_folder):
    """run.sh's timeout may come while AutoAttack runs: the stage must stop as it does in training (a status to
    call again, gpu.json, the export), and the whole-test-set piece must be in $OUT before the next piece starts
    (a kill after the SIGTERM's 15 s leaves no time to export it)."""
    import stages

    import ibrar.run_eval as run_eval
    from ibrar.run_folder import RunFolder

    out, seen, pieces = tmp_path / "out", [], []

    def evaluate(run_dir, **kwargs):
        pieces.append(kwargs["attacks"])
        if len(pieces) == 1:  # the whole test set: done
            RunFolder(run_dir).eval_file.write_text(json.dumps({"n": 80, "seed": 0, "clean": 0.5, "attacks": []}))
            return "the whole-test-set table"
        with tarfile.open(out / "table4.tar.gz") as archive:
            seen.extend(archive.getnames())
        os.kill(os.getpid(), signal.SIGTERM)  # the timeout's TERM while AutoAttack runs
        time.sleep(5)
        raise AssertionError("not stopped")

    def escaped(signum, frame):
        raise Escaped

    monkeypatch.setattr(run_eval, "evaluate_run", evaluate)
    for name, value in {"OUT": str(out), "IBRAR_GPU_RUNS": str(tmp_path / "runs"), "IBRAR_DATA_ROOT": str(image_folder),
                        "IBRAR_GPU_SCRATCH": str(tmp_path / "scratch"), "IBRAR_GPU_KIT_REHEARSAL": "1",
                        "IBRAR_GPU_EVAL_FULL_S": "0", "IBRAR_GPU_EVAL_SUBSET_S": "0"}.items():
        monkeypatch.setenv(name, value)
    for name in ("OPTIM", "OVERRIDES", "BUDGET_S", "SIDE_BY_SIDE_ROW"):
        monkeypatch.delenv(f"IBRAR_GPU_{name}", raising=False)
    previous = signal.signal(signal.SIGTERM, escaped)
    try:
        ctx = stages.Context.from_env("table4-2")
        status, where = stages.stage_run(ctx, {"device": "CPU", "torch": torch.__version__, "cuda": None}, "2")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status.startswith("stopped by the call's time budget") and status.endswith("call again to continue")
    assert f"table4-smoke/vgg16-2-ib/{kit.EVAL_FULL}" in seen  # exported before AutoAttack's piece started
    run = unpacked(out) / "table4-smoke" / "vgg16-2-ib"
    assert (run / kit.EVAL_FULL).is_file()
    assert json.loads((run / "gpu.json").read_text())["calls"][-1]["status"] == status


def test_a_call_again_line_carries_the_budget_placeholder_when_the_call_had_a_budget(monkeypatch):
    """Copied without IBRAR_GPU_BUDGET_S the next call would plan a whole 600 s call, whatever the lease has left."""
    from stages import next_command

    for name in ("OPTIM", "OVERRIDES", "BUDGET_S"):
        monkeypatch.delenv(f"IBRAR_GPU_{name}", raising=False)
    assert next_command(["table4-6"]) == "bash bench/gpu/run.sh table4-6"
    monkeypatch.setenv("IBRAR_GPU_BUDGET_S", "512")
    monkeypatch.setenv("IBRAR_GPU_OPTIM", "authors")
    assert next_command(["fetch", "6", "4"]) == ("IBRAR_GPU_OPTIM=authors IBRAR_GPU_BUDGET_S=B bash bench/gpu/run.sh "
                                                 "fetch 6 4")
    readme = (REPO / "bench" / "gpu" / "README.md").read_text()
    assert "replace its `B`" in readme  # the person puts in the reply's lease.budget_left_s


def test_the_junit_summary_names_the_modules_with_a_passing_and_with_a_failing_test(tmp_path):
    import cuda_check

    xml = tmp_path / "cuda-tests.xml"
    xml.write_text("""<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="2.5">
      <testcase classname="tests.test_graph_step" name="test_replay[ce]"/>
      <testcase classname="tests.test_cuda" name="test_penalty"><failure message="off by 3%&#10;more"/></testcase>
      <testcase classname="tests.test_cuda" name="test_ddp"><skipped message="one GPU"/></testcase>
    </testsuite></testsuites>""")
    summary = cuda_check.junit_summary(xml)
    assert (summary["passed"], summary["failures"], summary["skipped"]) == (1, 1, 1)
    assert summary["failed"] == ["test_penalty: off by 3%"]
    assert summary["failed_modules"] == ["tests.test_cuda"] and summary["passed_modules"] == ["tests.test_graph_step"]


def test_an_evaluation_piece_starts_only_when_ibrars_estimate_fits_what_the_call_has_left(tmp_path, monkeypatch,
                                                                                        image_folder):
    """Not a fixed guess: the piece's estimate on this model and device (run_evaluation's time_limit_s) decides,
    and a piece estimated over what is left says so and asks for the next call; the last call starts every piece."""
    from types import SimpleNamespace

    import stages

    import ibrar.run_eval as run_eval

    limits = []

    def estimated_at_300_s(run_dir, time_limit_s=None, **kwargs):
        limits.append(time_limit_s)
        if time_limit_s is not None and time_limit_s < 300:
            raise run_eval.EvaluationWouldNotFit(300.0, time_limit_s)
        raise AssertionError("started")

    monkeypatch.setattr(run_eval, "evaluate_run", estimated_at_300_s)
    for name in ("LAST_CALL", "EVAL_FULL_S", "EVAL_SUBSET_S", "BUDGET_S", "CALL_S", "CALL_LIMIT_S"):
        monkeypatch.delenv(f"IBRAR_GPU_{name}", raising=False)
    monkeypatch.setenv("IBRAR_GPU_CALL_LIMIT_S", "100")
    spec = SimpleNamespace(attacks=("pgd10", "autoattack"), seed=0, steps=(), group="2-ib")
    scale = SimpleNamespace(attack=lambda name: name, large_eps_check=False)
    config = SimpleNamespace(data=SimpleNamespace(name="imagefolder", root=str(image_folder)))
    ctx = stages.Context.from_env("table4-2")
    ctx.t0 = stages.time.time()
    assert ctx.eval_full_s is None and ctx.eval_subset_s is None  # the estimate decides
    status = stages.evaluate_row(ctx, spec, scale, config, tmp_path / "run", "table4")
    assert "(eval-full.json) is estimated at about 300 s" in status and status.endswith("call again")
    assert 90 < limits[-1] <= 100  # what the call had left
    ctx.t0 -= 95  # 5 s left: not even estimated
    assert "needs at least 10 s and" in stages.evaluate_row(ctx, spec, scale, config, tmp_path / "run", "table4")
    assert len(limits) == 1
    monkeypatch.setenv("IBRAR_GPU_LAST_CALL", "1")  # the last call: no limit, the piece starts
    last = stages.Context.from_env("table4-2")
    assert (last.eval_full_s, last.eval_subset_s) == (0.0, 0.0)
    with pytest.raises(AssertionError, match="started"):
        stages.evaluate_row(last, spec, scale, config, tmp_path / "run", "table4")
    assert limits[-1] is None


def test_the_checks_benchmark_leaves_the_lease_to_the_rows_and_the_call_time_to_write_its_files(tmp_path):
    import time

    import cuda_check
    from stages import Context

    def budget(left: float) -> float:
        ctx = Context("check", tmp_path, False, time.time(), tmp_path / "data", tmp_path / "runs")
        ctx.call_limit = left
        args = cuda_check.fast_path_args(ctx)
        return float(args[args.index("--budget-s") + 1])

    assert budget(540) == cuda_check.BENCH_S == 180  # a whole call: three minutes of rounds, the rest for the rows
    assert 89 <= budget(150) <= 90  # a short call: a minute kept for the files
    assert budget(50) == 30  # at least one round runs


def test_collect_keeps_the_cuda_tests_junit_report_beside_the_checks_other_files(tmp_path):
    """cuda-tests.xml holds each failing CUDA test's traceback (check.json only its first line): it must reach
    results/gpu-check/ with check.json, check.md and stage.json."""
    files_at = tmp_path / "files"
    files_at.mkdir()
    for name in ("check.json", "stage.json"):
        (files_at / name).write_text("{}\n")
    (files_at / "check.md").write_text("# GPU check\n")
    (files_at / "cuda-tests.xml").write_text('<testsuites><testsuite tests="1"/></testsuites>\n')
    (files_at / "stage.log").write_text("== ibrar GPU kit: stage check\n")
    dest = tmp_path / "results" / "gpu-check"
    assert kit.collect(files_at, tmp_path / "results") == [dest]
    assert sorted(p.name for p in dest.iterdir()) == ["check.json", "check.md", "cuda-tests.xml", "stage.json"]
    assert (dest / "cuda-tests.xml").read_text() == (files_at / "cuda-tests.xml").read_text()


def test_the_stages_sigterm_counts_from_the_calls_start_so_a_slow_set_up_cannot_push_it_past_the_call(rehearsal,
                                                                                                    tmp_path):
    """run.sh's timeout must end the stage 20 s before the call's end counted from T0, set-up included: here the
    set-up has already "taken" 100 s of a 124 s call (IBRAR_GPU_T0 100 s ago), so the stage (a stand-in that
    sleeps a minute) gets about 4 s, not 104 s after its set-up."""
    python = tmp_path / "python"
    python.write_text("#!/usr/bin/env bash\n"
                      'if [[ $1 == bench/gpu/stages.py && $2 != finalize ]]; then exec sleep 60; fi\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    started = time.time()
    stage, log = device_call({**rehearsal, "IBRAR_GPU_PYTHON": str(python)}, tmp_path / "out", "check", rc=124,
                             IBRAR_GPU_T0=f"{started - 100:.3f}", IBRAR_GPU_CALL_S="124")
    assert time.time() - started < 50  # the set-up, at most 4 s of the stage, and finalize
    assert stage["status"].startswith("stopped (exit code 124)") and stage["next"] == "bash bench/gpu/run.sh check"
    assert "CALL AGAIN" in log


def test_the_stage_timeout_is_what_the_call_has_left_after_its_set_up(monkeypatch):
    import stages

    for name in ("BUDGET_S", "STAGE_TIMEOUT_S"):
        monkeypatch.delenv(f"IBRAR_GPU_{name}", raising=False)
    monkeypatch.setenv("IBRAR_GPU_CALL_S", "600")
    monkeypatch.setenv("IBRAR_GPU_T0", str(time.time() - 70))  # a 70 s set-up
    assert 509 <= stages.stage_timeout_s() <= 510
    monkeypatch.setenv("IBRAR_GPU_STAGE_TIMEOUT_S", "332")  # an override counts from the call's start too
    assert 261 <= stages.stage_timeout_s() <= 262
    monkeypatch.setenv("IBRAR_GPU_T0", str(time.time() - 400))  # past it already: timeout 0 would never fire
    assert stages.stage_timeout_s() == 1


def test_a_check_cut_off_inside_the_benchmark_still_advises_the_next_call_from_the_rounds_measured(tmp_path,
                                                                                                 monkeypatch):
    """run.sh's SIGTERM inside the benchmark: stage.json must still get the advice, with the budget placeholder,
    judged on the rounds done (here one, with a 2 ms fp32 CE + IB-RAR step: all six rows, eagerly)."""
    import cuda_check

    import bench_fast_path

    tests = {"tests": 3, "failures": 0, "errors": 0, "skipped": 0, "passed": 3, "seconds": 1.0, "failed": [],
             "failed_modules": [], "passed_modules": ["tests.test_cuda"], "exit_code": 0}
    monkeypatch.setattr(cuda_check, "run_cuda_tests", lambda ctx, timeout: tests)

    def cut_off_after_one_round(args, so_far=None):
        if so_far is not None:
            so_far.update(bench_fast_path.collect({"fp32": []}, {("fp32", m): 0.002 for m in bench_fast_path.METHODS},
                                                  {}, "CPU"), rounds=1, unavailable=[])
        os.kill(os.getpid(), signal.SIGTERM)  # run.sh's timeout, inside the second round
        time.sleep(5)
        raise AssertionError("not stopped")

    monkeypatch.setattr(bench_fast_path, "main", cut_off_after_one_round)
    status, extra = check_catching_sigterm(tmp_path)
    assert status.startswith("finished; the benchmark was cut off") and "1 of its rounds" in status
    check = json.loads((tmp_path / "check.json").read_text())
    assert extra["advice"] == check["advice"]["command"] == (
        "IBRAR_GPU_OPTIM=authors IBRAR_GPU_OVERRIDES=train.cuda_graph=false IBRAR_GPU_BUDGET_S=B bash "
        "bench/gpu/run.sh table4")
    assert check["fast_path"]["rounds"] == 1 and check["goals"]["sync_free"] is None
    text = (tmp_path / "check.md").read_text()
    assert "The benchmark was cut off" in text and "sync" not in text.split("## The next call")[1]
    assert "| fp32 | CE + IB-RAR | 2.0 |" in text and "not checked" in text


def test_a_check_cut_off_inside_the_cuda_tests_stops_pytest_and_still_advises_the_eager_step(tmp_path,
                                                                                                monkeypatch):
    """run.sh's SIGTERM while pytest runs: the child is stopped at once, the benchmark does not start, and
    stage.json still gets the advice for what nothing was measured on (eager, row (6) alone)."""
    import threading

    import cuda_check

    real_run = subprocess.run
    children: list[float] = []

    def slow_pytest(command, **kwargs):  # a test run that would outlast the call: the TERM comes inside it
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        children.append(time.monotonic())
        return real_run([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs)

    monkeypatch.setattr(cuda_check.subprocess, "run", slow_pytest)
    monkeypatch.setattr(cuda_check, "fast_path_args", lambda ctx: pytest.fail("the benchmark must not start"))
    status, extra = check_catching_sigterm(tmp_path)
    assert time.monotonic() - children[0] < 20  # the 60 s child was not waited for
    assert status.startswith("stopped by the call's time budget inside the CUDA tests")
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["cuda_tests"]["cut_off"] == f"signal {int(signal.SIGTERM)}"
    assert extra["advice"] == check["advice"]["command"] == (
        "IBRAR_GPU_OPTIM=authors IBRAR_GPU_OVERRIDES=train.cuda_graph=false IBRAR_GPU_BUDGET_S=B bash "
        "bench/gpu/run.sh table4 6")
    text = (tmp_path / "check.md").read_text()
    assert "The CUDA tests were cut off" in text and "the call's time ran out in the CUDA tests" in text


def prepare_checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkout with prepare.sh and no ../shared beside it, and a python whose `pip download` does nothing
    (no network here): the environment to run prepare.sh in."""
    repo = tmp_path / "checkout"
    (repo / "bench" / "gpu").mkdir(parents=True)
    for name in ("prepare.sh", "kit.py", "wheels.txt"):
        shutil.copy2(REPO / "bench" / "gpu" / name, repo / "bench" / "gpu" / name)
    (repo / ".gitignore").write_text(".gpu-kit/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    python = tmp_path / "python"
    python.write_text("#!/usr/bin/env bash\n"
                      'if [[ $1 == -m && $2 == pip ]]; then echo "pip offline: $*"; exit 0; fi\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("IBRAR_GPU_KIT", "IBRAR_CIFAR10_TARBALL")}
    (repo / ".gpu-kit" / "wheels").mkdir(parents=True)
    (repo / ".gpu-kit" / "wheels" / f"{PROBE}-0.0.0-py3-none-any.whl").write_bytes(b"a wheel")
    return repo, {**env, "PYTHON": str(python)}


def test_prepare_keeps_the_kits_own_data_when_shared_is_absent(tmp_path):
    """A kit prepared before (its tarball there), in a checkout with no ../shared: prepare.sh uses what is there
    instead of refusing (it refused, after wiping and downloading the wheels, and wrote no source.json)."""
    repo, env = prepare_checkout(tmp_path)
    (repo / ".gpu-kit" / "cifar10-jpeg.tar.gz").write_bytes(b"the kit's own CIFAR-10")
    done = subprocess.run(["bash", "bench/gpu/prepare.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keeping the kit's own" in done.stdout and "of 64 MiB: fits" in done.stdout
    assert (repo / ".gpu-kit" / "cifar10-jpeg.tar.gz").read_bytes() == b"the kit's own CIFAR-10"
    assert json.loads((repo / ".gpu-kit" / "source.json").read_text())["commit"] == "unknown"


def test_prepare_with_no_data_anywhere_refuses_before_touching_the_wheels_and_names_the_fix(tmp_path):
    repo, env = prepare_checkout(tmp_path)
    done = subprocess.run(["bash", "bench/gpu/prepare.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "set IBRAR_CIFAR10_TARBALL=" in done.stderr, done.stdout + done.stderr
    assert "pip offline" not in done.stdout  # nothing downloaded, and the kit's wheels are as they were
    assert [p.name for p in (repo / ".gpu-kit" / "wheels").iterdir()] == [f"{PROBE}-0.0.0-py3-none-any.whl"]
    missing = {**env, "IBRAR_CIFAR10_TARBALL": str(tmp_path / "nowhere.tar.gz")}
    done = subprocess.run(["bash", "bench/gpu/prepare.sh"], cwd=repo, env=missing, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "IBRAR_CIFAR10_TARBALL=" in done.stderr and "is not a file" in done.stderr
