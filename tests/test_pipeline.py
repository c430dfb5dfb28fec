"""The one train-then-evaluate pipeline: what a run folder holds decides what is left to do."""

from __future__ import annotations

import json

from conftest import tiny_config
from ibrar.config import build_config
from ibrar.pipeline import EvalRequest, train_and_evaluate
from ibrar.run_folder import RunFolder


def test_a_run_is_trained_and_evaluated_once_then_left_alone_and_a_lost_evaluation_is_redone(image_folder,
                                                                                            tmp_path):
    config = build_config(tiny_config(image_folder, train={"epochs": 1}))
    run = tmp_path / "run"
    request = EvalRequest(["fgsm"], n=8)
    assert RunFolder(run).state() == "new"
    first = train_and_evaluate(config, run, evaluation=request, quiet=True)
    assert first.found == "new" and "fgsm" in first.table and RunFolder(run).state() == "done"
    weights, evaluation = (run / "final.pt").stat().st_mtime_ns, (run / "eval.json").read_text()

    again = train_and_evaluate(config, run, evaluation=request, quiet=True)
    assert again.found == "done" and again.table == "" and (run / "eval.json").read_text() == evaluation

    (run / "eval.json").unlink()
    redone = train_and_evaluate(config, run, evaluation=request, quiet=True)
    assert redone.found == "evaluate" and (run / "final.pt").stat().st_mtime_ns == weights  # not trained again
    assert json.loads((run / "eval.json").read_text())["attacks"][0]["name"] == "fgsm"


def test_without_an_evaluation_the_pipeline_only_trains(image_folder, tmp_path):
    config = build_config(tiny_config(image_folder, train={"epochs": 1}))
    result = train_and_evaluate(config, tmp_path / "run", evaluation=None, quiet=True)
    assert result.table == "" and RunFolder(tmp_path / "run").state() == "evaluate"
