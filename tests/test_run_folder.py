"""RunFolder, the one owner of a run folder's files: its state, refusing to mix two runs, starting and resuming
(meta legs, logs cut back to the checkpoint), and the evaluation read and written one way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from ibrar.config import build_config
from ibrar.errors import InputError
from ibrar.evaluation_record import Evaluation
from ibrar.folder_lock import LOCK_FILE
from ibrar.run_folder import RunFolder, RunFolderError

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path):
    return build_config(tiny_config(tmp_path, name="folder-test"))


def test_the_state_follows_what_the_folder_holds(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.state() == "new"
    folder.start(_config(tmp_path), resume=False)
    assert folder.state() == "resume"
    folder.final_file.write_bytes(b"weights")
    assert folder.state() == "evaluate"
    folder.write_evaluation(Evaluation.from_dict({"n": 1, "seed": 0, "clean": 1.0}))
    assert folder.state() == "done"


def test_a_damaged_config_file_is_a_run_folder_error_naming_it(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start(_config(tmp_path), resume=False)
    folder.config_file.write_text("name: tiny\nmodel: {name: [small_cnn\n")  # cut short mid-write
    with pytest.raises(RunFolderError, match="config.yaml is damaged"):
        folder.config()


def test_a_folder_with_another_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(RunFolderError, match="no config.yaml there"):
        folder.check_for_training(resume=True, overwrite=False)
    folder.check_for_training(resume=False, overwrite=False)  # nothing there yet
    folder.start(_config(tmp_path), resume=False)
    with pytest.raises(RunFolderError, match="--resume") as refused:
        folder.check_for_training(resume=False, overwrite=False)
    assert "another run's config" in str(refused.value)
    folder.check_for_training(resume=True, overwrite=False)
    folder.check_for_training(resume=False, overwrite=True)


def test_overwrite_never_clears_a_folder_that_holds_no_run(tmp_path):
    folder = RunFolder(tmp_path / "mine")
    (folder.path / "sub").mkdir(parents=True)
    (folder.path / "thesis.tex").write_text("months of work")
    with pytest.raises(RunFolderError, match="no run .no config.yaml.") as refused:
        folder.check_for_training(resume=False, overwrite=True)
    assert "--out" in str(refused.value)
    assert (folder.path / "thesis.tex").read_text() == "months of work"


def test_an_output_folder_that_is_a_file_is_a_run_folder_error(tmp_path):
    (tmp_path / "config.yaml").write_text("name: tiny\n")
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(RunFolderError, match="is a file, not a folder"):
            RunFolder(tmp_path / "config.yaml").check_for_training(resume=resume, overwrite=overwrite)


def test_a_replaced_run_is_cleared_but_the_lock_stays(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start(_config(tmp_path), resume=False)
    (folder.path / LOCK_FILE).write_text("123\n")
    (folder.path / "sub").mkdir()
    folder.metrics_file.write_text('{"epoch": 1}\n')
    folder.start(_config(tmp_path), resume=False)
    assert sorted(p.name for p in folder.path.iterdir()) == sorted([LOCK_FILE, folder.config_file.name])
    assert folder.config().name == "folder-test"


def test_a_resumed_run_keeps_its_first_start_and_appends_each_leg(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_meta({"started": "first"}, resume=False)
    folder.write_meta({"started": "second"}, resume=True)
    folder.write_meta({"started": "third"}, resume=True)
    meta = folder.meta()
    assert meta["started"] == "first" and [leg["started"] for leg in meta["resumed"]] == ["second", "third"]
    folder.meta_file.write_text("{broken")
    with pytest.raises(RunFolderError, match="meta.json is not valid JSON"):
        folder.meta()
    assert folder.recorded_data_root() is None  # the root is then given again, as before it was recorded
    folder.write_meta({"started": "fourth"}, resume=True)  # no readable record of the first start: this leg is all
    assert folder.meta() == {"started": "fourth"}


def test_the_logs_are_cut_back_to_what_a_checkpoint_covers(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_metrics({"epoch": e} for e in (1, 2, 3))
    folder.append_info_plane({"iteration": i} for i in (10, 20, 30))
    with folder.metrics_file.open("a") as f:
        f.write('{"epoch": 4, "lo')  # a line cut by a kill
    assert [r["epoch"] for r in folder.metrics()] == [1, 2, 3]
    folder.keep_logs(lambda r: r["epoch"] <= 2, lambda r: r["iteration"] < 20)
    assert [r["epoch"] for r in folder.metrics()] == [1, 2]
    assert [r["iteration"] for r in folder.info_plane()] == [10]
    folder.clear_logs()
    assert folder.metrics() == [] and folder.info_plane() == []


def test_the_evaluation_is_none_before_it_runs_and_an_error_saying_what_to_run_where_required(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.evaluation() is None and folder.partial_evaluation() is None and not folder.has_evaluation()
    with pytest.raises(InputError, match=f"ibrar eval {tmp_path}"):
        folder.require_evaluation()


def test_an_evaluation_is_written_whole_and_read_back_as_it_was(tmp_path):
    folder = RunFolder(tmp_path)
    record = Evaluation.from_dict({"n": 10, "seed": 1, "clean": 0.9, "attacks": [{"name": "fgsm", "accuracy": 0.3}]})
    folder.write_evaluation(record)
    assert [p.name for p in tmp_path.iterdir()] == [folder.eval_file.name]  # no temporary file left
    assert folder.evaluation() == record
    assert json.loads(folder.eval_file.read_text())["schema_version"] == 1


def test_an_earlier_evaluation_is_kept_by_its_start_time_and_never_overwritten(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.keep_earlier_evaluation() is None  # nothing to keep
    started = "2026-12-06T22:15:00+00:00"
    kept = []
    for text in (json.dumps({"n": 10, "seed": 0, "clean": 0.9, "meta": {"started": started}}),) * 2 + ("{cut",):
        folder.eval_file.write_text(text)
        kept.append(folder.keep_earlier_evaluation())
        assert not folder.eval_file.exists() and kept[-1].read_text() == text
    assert [p.name for p in kept[:2]] == ["eval-2026-12-06T22-15-00Z.json", "eval-2026-12-06T22-15-00Z-2.json"]
    assert kept[2].parent == tmp_path / "eval-history" and kept[2].name.startswith("eval-")  # damaged: its mtime


def test_the_gpu_kits_partial_evaluation_is_its_own_file(tmp_path):
    folder = RunFolder(tmp_path)
    folder.partial_eval_file.write_text(json.dumps({"n": 10000, "seed": 0, "clean": 0.8}))
    assert folder.partial_evaluation().n == 10000 and folder.evaluation() is None


def test_the_run_folder_imports_no_pydantic_for_the_gpu_kits_fetch_call():
    """The kit's fetch call installs nothing on the GPU machine, where pydantic is missing; it uses RunFolder."""
    code = ("import sys; import ibrar.run_folder as f; f.RunFolder('x').final_file; "
            "print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src")}, cwd=REPO)
    assert out.stdout.strip() == "False"
