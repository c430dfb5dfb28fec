"""A run folder's weights are checked against the sha256 written with them, and only one process writes a folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from ibrar.checkpoint import load_file, save_atomic
from ibrar.folder_lock import LOCK_FILE, FolderBusyError, locked_folder
from ibrar.integrity import CorruptWeightsError, file_sha256, recorded_digests, replace_verified, sidecar, verify_digest

SRC = Path(__file__).resolve().parents[1] / "src"


def flip_byte(path: Path, offset_from_end: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_atomic_records_the_files_sha256_and_load_accepts_it(tmp_path):
    path = tmp_path / "final.pt"
    save_atomic({"model": {"w": torch.arange(1000.0)}}, path)
    assert recorded_digests(path) == [file_sha256(path)]
    assert torch.equal(load_file(path)["model"]["w"], torch.arange(1000.0))


def test_a_flipped_byte_in_the_tensor_data_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "final.pt"
    save_atomic({"model": {"w": torch.zeros(100_000)}}, path)
    flip_byte(path)
    with pytest.raises(CorruptWeightsError, match="final.pt is corrupt"):
        load_file(path)


def test_a_kill_between_the_digest_and_the_rename_leaves_a_loadable_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"w": torch.zeros(10)}, path)
    tmp = tmp_path / "next.tmp"
    torch.save({"w": torch.ones(10)}, tmp)
    import ibrar.integrity as integrity

    real_replace = os.replace

    def killed_before_renaming_the_weights(src, dst):
        if Path(dst) == path:  # the process dies after recording both digests, before the rename
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(integrity.os, "replace", killed_before_renaming_the_weights)
    with pytest.raises(KeyboardInterrupt):
        replace_verified(tmp, path)
    monkeypatch.undo()
    assert len(recorded_digests(path)) == 2
    assert torch.equal(load_file(path)["w"], torch.zeros(10))  # the old file still matches its sidecar
    replace_verified(tmp, path)
    assert torch.equal(load_file(path)["w"], torch.ones(10))
    assert recorded_digests(path) == [file_sha256(path)]


def test_a_file_written_before_digests_existed_loads_as_before(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(3)}}, path)
    assert not sidecar(path).exists()
    verify_digest(path)
    assert torch.equal(load_file(path)["model"]["w"], torch.ones(3))


def test_a_damaged_sidecar_is_an_error_not_a_pass(tmp_path):
    path = tmp_path / "final.pt"
    save_atomic({"w": torch.ones(3)}, path)
    sidecar(path).write_text("not a digest\n")
    with pytest.raises(CorruptWeightsError, match="sha256"):
        load_file(path)


def test_eval_of_a_run_whose_final_weights_lost_a_byte_exits_2_naming_the_file(image_folder, tmp_path, capsys):
    from ibrar.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(image_folder, train={"epochs": 1})))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0
    flip_byte(run / "final.pt")
    capsys.readouterr()
    assert main(["eval", str(run), "--attacks", "fgsm", "--n", "8", "--quiet"]) == 2
    assert "final.pt is corrupt" in capsys.readouterr().err


def test_a_second_training_into_a_folder_in_use_exits_2_naming_the_holder(image_folder, tmp_path, capsys):
    from ibrar.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(image_folder, train={"epochs": 1})))
    run, ready = tmp_path / "run", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _holder_script(run, ready)],
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        _wait_for(ready, holder)
        assert main(["train", str(config), "--out", str(run), "--quiet"]) == 2
        assert f"in use by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_the_lock_is_reentrant_within_one_process_and_released_after(tmp_path):
    with locked_folder(tmp_path):
        with locked_folder(tmp_path):
            assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    # released: a child process can take it
    code = f"from ibrar.folder_lock import locked_folder\nwith locked_folder({str(tmp_path)!r}): print('ok')"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def _holder_script(folder: Path, ready: Path) -> str:
    return textwrap.dedent(f"""
        import time
        from pathlib import Path
        from ibrar.folder_lock import locked_folder
        with locked_folder({str(folder)!r}):
            Path({str(ready)!r}).write_text("held")
            time.sleep(60)
    """)


def test_an_evaluation_into_a_folder_being_trained_exits_2_naming_the_holder(image_folder, tmp_path, capsys):
    from ibrar.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(image_folder, train={"epochs": 1})))
    run, ready = tmp_path / "run", tmp_path / "ready"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0
    holder = subprocess.Popen([sys.executable, "-c", _holder_script(run, ready)],
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        _wait_for(ready, holder)
        capsys.readouterr()
        assert main(["eval", str(run), "--attacks", "fgsm", "--n", "8", "--quiet"]) == 2
        assert f"in use by pid {holder.pid}" in capsys.readouterr().err
        assert not (run / "eval.json").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def _wait_for(ready: Path, holder: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_holders_pid_and_a_killed_holders_lock_is_taken_over(tmp_path):
    folder, ready = tmp_path / "run", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _holder_script(folder, ready)],
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        _wait_for(ready, holder)
        with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"):
            with locked_folder(folder):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with locked_folder(folder):  # the dead holder's lock is taken over
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_lock_on_a_folder_that_did_not_exist_leaves_nothing_when_nothing_was_written(tmp_path):
    folder = tmp_path / "new"
    with locked_folder(folder):
        assert folder.is_dir()
    assert not folder.exists()


def test_an_exports_safetensors_with_a_flipped_byte_is_refused(image_folder, tmp_path):
    from ibrar.cli import main
    from ibrar.export import export_run
    from ibrar.loading import load_pretrained

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(image_folder, train={"epochs": 1})))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0
    exported = export_run(run, tmp_path / "export")
    load_pretrained(exported)  # intact: loads
    flip_byte(exported / "model.safetensors", offset_from_end=0)
    with pytest.raises(CorruptWeightsError, match="model.safetensors is corrupt"):
        load_pretrained(exported)
