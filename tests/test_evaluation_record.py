"""eval.json as a typed record: every committed evaluation reads and writes back unchanged, old files read as
schema 1, and a damaged, foreign or newer file is an error naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ibrar.cli import main
from ibrar.evaluation_record import SCHEMA_VERSION, Evaluation, EvaluationError
from ibrar.run_files import EVAL_FILE, PARTIAL_EVAL_FILE

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted([*REPO.glob(f"results/**/{EVAL_FILE}"), *REPO.glob(f"results/**/{PARTIAL_EVAL_FILE}")])


def _minimal(**extra: object) -> dict:
    return {"n": 100, "seed": 3, "clean": 0.5, "worst_case": 0.2,
            "attacks": [{"name": "pgd10", "accuracy": 0.25}, {"name": "fab", "accuracy": None}], **extra}


def test_every_committed_evaluation_reads_and_writes_back_unchanged():
    assert COMMITTED, "results/ holds no eval.json"
    for path in COMMITTED:
        original = json.loads(path.read_text())  # a file written before schema_version reads as version 1
        assert Evaluation.read(path).to_dict() == {"schema_version": SCHEMA_VERSION, **original}, path


def test_a_file_without_a_schema_version_reads_as_version_1_and_is_written_with_it(tmp_path):
    path = tmp_path / EVAL_FILE
    path.write_text(json.dumps(_minimal()))
    record = Evaluation.read(path)
    assert record.schema_version == 1
    assert json.loads(record.to_json())["schema_version"] == 1
    assert next(iter(record.to_dict())) == "schema_version"  # first, where a reader looks


def test_metric_is_in_percent_and_none_for_an_attack_that_did_not_run_or_could_not():
    record = Evaluation.from_dict(_minimal())
    assert record.metric("clean") == 50.0 and record.metric("worst_case") == 20.0
    assert record.metric("pgd10") == 25.0
    assert record.metric("fab") is None and record.metric("cw") is None
    assert record.attack("pgd10").accuracy == 0.25 and record.attack("cw") is None


def test_the_linf_case_is_read_from_worst_cases_and_absent_from_an_old_file():
    cases = [{"norm": "L2", "eps": None, "attacks": ["cw"], "accuracy": 0.1},
             {"norm": "Linf", "eps": 8 / 255, "attacks": ["fgsm", "pgd10"], "accuracy": 0.2}]
    assert Evaluation.from_dict(_minimal(worst_cases=cases)).linf_case() == (["fgsm", "pgd10"], 8 / 255)
    assert Evaluation.from_dict(_minimal()).linf_case() is None


def test_fields_this_version_does_not_know_survive_a_read_and_a_write():
    record = Evaluation.from_dict(_minimal(added_later={"x": 1}))
    assert record.to_dict()["added_later"] == {"x": 1}


@pytest.mark.parametrize(("text", "named"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps(_minimal(schema_version=SCHEMA_VERSION + 1)), "newer than this ibrar reads"),
    (json.dumps({"seed": 0, "clean": 0.5}), "n: Field required"),
    (json.dumps(_minimal(clean="high")), "clean:"),
    (json.dumps(_minimal(attacks=[{"accuracy": 0.1}])), "attacks.0.name"),
])
def test_a_file_ibrar_cannot_read_is_an_error_naming_it_and_the_problem(tmp_path, text, named):
    path = tmp_path / EVAL_FILE
    path.write_text(text)
    with pytest.raises(EvaluationError) as raised:
        Evaluation.read(path)
    assert str(path) in str(raised.value) and named in str(raised.value)


def test_the_report_on_a_damaged_eval_json_exits_2_naming_the_file(tmp_path, capsys):
    from test_report import DOCS

    for doc in DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / doc, tmp_path / doc)
    run = tmp_path / "results" / "quickstart" / "quickstart"
    run.mkdir(parents=True)
    (run / EVAL_FILE).write_text(json.dumps({"n": 10, "seed": 0}))  # no clean accuracy
    assert main(["report", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(run / EVAL_FILE) in err and "clean" in err and "Traceback" not in err
