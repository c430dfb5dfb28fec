"""The number called AutoAttack is the reference's (pyautoattack, standard version): per-stage accuracies equal
to the reference's own run on the same examples, its sanity-check warnings kept, an interrupted run resumed."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
from pathlib import Path

import pyautoattack
import pytest
import torch
from torch import nn

from attack_fixtures import test_data, trained_model
from ibrar.attacks import ReferenceAutoAttack, build_attack
from ibrar.attacks.reference_autoattack import PROGRESS_FILE, STATE_FILE
from ibrar.evaluate import evaluate, masking_warnings, select_subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from check_autoattack import reference_stages  # noqa: E402  (the reference run by hand, shared with the check)

EPS = 6 / 255  # partial robustness on the tiny model: every stage has examples left to work on
BUDGET = {"n_iter": 5, "n_queries": 60}  # the reference's own budget knobs, cut for test speed


def percent(stages):
    return {k: f"{100 * v:.2f}" for k, v in stages.items()}


@pytest.fixture(scope="module")
def model():
    return trained_model()


def test_per_stage_accuracies_equal_the_reference_run_on_the_same_examples(model):
    x_all, y_all = test_data(96)
    report = evaluate(model, x_all, y_all, {"autoattack": ReferenceAutoAttack(model, EPS, **BUDGET)}, n=60,
                      seed=0, eps=EPS, batch_size=16)
    index = select_subset(96, 60, 0)
    x, y = x_all[index], y_all[index]
    expected, x_adv = reference_stages(model, x, y, EPS, 9, batch_size=16, **BUDGET)
    block = report.autoattack
    assert percent(block["stages"]) == expected
    assert len(set(expected.values())) > 2  # the stages did work: the check is not vacuous
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert torch.equal(report.robust["autoattack"], robust)
    assert report.worst_case == pytest.approx(robust.float().mean().item())
    assert block["implementation"] == "pyautoattack" and block["package_version"] == pyautoattack.__version__
    assert block["version"] == "standard" and block["norm"] == "Linf" and block["eps"] == EPS
    assert block["seed"] == 0 and block["n_target_classes"] == 9 and block["batch_size"] == 16
    assert block["budget"] == BUDGET and block["standard_budget"] is False


def test_each_stage_reports_the_examples_it_attacked_and_those_left_robust(model):
    """The progress of AutoAttack stage by stage: a stage attacks what the one before left robust."""
    import io

    from ibrar.eval_progress import EvalProgress

    x, y = test_data(60)
    stream = io.StringIO()
    report = evaluate(model, x, y, {"autoattack": ReferenceAutoAttack(model, EPS, **BUDGET)}, eps=EPS,
                      batch_size=16, progress=EvalProgress(quiet=True, stream=stream))
    counts = {k: round(v * 60) for k, v in report.autoattack["stages"].items()}
    lines = {line.split(":")[0]: line for line in stream.getvalue().splitlines()}
    previous = "clean"
    for stage, label in (("apgd-ce", "APGD-CE"), ("apgd-t", "APGD-T"), ("fab-t", "FAB-T"), ("square", "Square")):
        if counts[previous] == 0:  # the reference stops when nothing robust is left
            assert f"autoattack {label}" not in lines
            continue
        assert lines[f"autoattack {label}"].startswith(
            f"autoattack {label}: {counts[previous]} examples attacked, {counts[stage]} robust")
        previous = stage
    assert counts["clean"] > counts["apgd-ce"] > 0  # the check is not vacuous


def test_the_name_autoattack_builds_the_reference_with_its_standard_budget(model):
    attack = build_attack("autoattack", model, eps=8 / 255, seed=3)
    assert isinstance(attack, ReferenceAutoAttack)
    params = attack.params(num_classes=4)
    assert params["standard_budget"] and params["budget"] == {"n_iter": 100, "n_queries": 5000}
    assert params["n_target_classes"] == 3 and params["seed"] == 3  # min(9, classes - 1)
    aa = attack.reference(num_classes=4)
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"] and aa.version == "standard"
    assert aa.apgd_targeted.n_target_classes == 3 and aa.fab.n_target_classes == 3
    assert aa.square.n_queries == 5000 and aa.apgd.n_iter == 100 and not aa.square.rescale_schedule


class _Softmax(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).softmax(1)


def test_a_model_returning_probabilities_gets_the_references_warning(model):
    x, y = test_data(16)
    wrapped = _Softmax(model)
    report = evaluate(wrapped, x, y, {"autoattack": ReferenceAutoAttack(wrapped, EPS, n_iter=2, n_queries=5)},
                      eps=EPS)
    data = json.loads(json.dumps(report.to_dict()))
    assert any("probability distribution" in w for w in data["autoattack"]["warnings"])


class _Interruptible(nn.Module):
    """The tiny model, interrupted at the first forward pass after the reference finished APGD-T."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.armed = False
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.armed:
            raise KeyboardInterrupt("killed")
        return self.inner(x)



@contextlib.contextmanager
def interrupt_after(wrapped, prefix: str):
    """Arm the model's interruption once the reference logs a line starting with ``prefix``; yields the lines."""
    seen: list[str] = []

    class Arm(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith(prefix):
                seen.append(record.getMessage())
                wrapped.armed = True

    logger = logging.getLogger("auto-attack")
    handler = Arm()
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def test_an_interrupted_evaluation_resumes_from_its_state_in_the_folder(model, tmp_path):
    x, y = test_data(48)
    wrapped = _Interruptible(model)
    attack = ReferenceAutoAttack(wrapped, EPS, **BUDGET)

    with pytest.raises(KeyboardInterrupt), interrupt_after(wrapped, "robust accuracy after APGD-T"):
        attack.run(x, y, batch_size=16, state_dir=tmp_path)
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / PROGRESS_FILE).is_file()
    wrapped.armed, wrapped.calls = False, 0
    resumed = attack.run(x, y, batch_size=16, state_dir=tmp_path)
    calls_resumed = wrapped.calls
    assert resumed.resumed_stages == ["apgd-ce", "apgd-t"]
    assert not (tmp_path / STATE_FILE).exists() and not (tmp_path / PROGRESS_FILE).exists()  # done: cleaned

    wrapped.calls = 0
    fresh = attack.run(x, y, batch_size=16, state_dir=tmp_path)
    assert fresh.resumed_stages == [] and wrapped.calls > calls_resumed  # the resumed call skipped work
    assert resumed.stages == fresh.stages
    assert torch.equal(resumed.robust, fresh.robust)


def test_square_stage_beating_the_gradient_stages_is_a_masking_warning(model):
    x, y = test_data(16)
    report = evaluate(model, x, y, {"autoattack": ReferenceAutoAttack(model, EPS, n_iter=2, n_queries=5)},
                      eps=EPS)
    report.autoattack["stages"].update({"fab-t": 0.5, "square": 0.3})
    assert any("Square stage lowered" in w for w in masking_warnings(report))
    report.autoattack["stages"].update({"square": 0.5})
    assert not any("Square stage" in w for w in masking_warnings(report))


@pytest.mark.parametrize(("pgd", "nifgsm", "autoattack", "flagged"), [
    (0.095, 0.11, 0.0, ["pgd2"]),  # AutoAttack breaks every example PGD leaves; NI-FGSM is weak by design
    (0.51, 0.52, 0.48, []),  # a few points below PGD, as on an adversarially trained network
    (0.03, 0.03, 0.015, []),  # over half, but within the tolerance
])
def test_autoattack_breaking_most_of_an_iterative_attacks_survivors_is_a_masking_warning(
        model, pgd, nifgsm, autoattack, flagged):
    x, y = test_data(16)
    attacks = {"fgsm": build_attack("fgsm", model, eps=EPS), "pgd2": build_attack("pgd2", model, eps=EPS),
               "nifgsm2": build_attack("nifgsm2", model, eps=EPS),
               "autoattack": ReferenceAutoAttack(model, EPS, n_iter=2, n_queries=5)}
    report = evaluate(model, x, y, attacks, eps=EPS)
    for name, accuracy in (("fgsm", 0.3), ("pgd2", pgd), ("nifgsm2", nifgsm)):
        report.result(name).accuracy = accuracy
    report.autoattack["robust_accuracy"] = autoattack
    warnings = [w for w in masking_warnings(report) if w.startswith("AutoAttack breaks")]
    assert [w.split(" leaves robust")[0].rsplit(" ", 1)[1] for w in warnings] == flagged  # never FGSM or NI-FGSM
    if flagged:
        assert "AutoAttack breaks 100% of the examples pgd2 leaves robust (pgd2 9.5%, AutoAttack 0.0%)" in warnings[0]


def test_an_evaluation_killed_inside_a_stage_resumes_from_the_references_per_batch_state(model, tmp_path):
    x, y = test_data(48)
    wrapped = _Interruptible(model)
    attack = ReferenceAutoAttack(wrapped, EPS, **BUDGET)
    # FAB-T's first batch is done and saved when the reference logs it.
    with pytest.raises(KeyboardInterrupt), interrupt_after(wrapped, "fab-t - 1/") as batches:
        attack.run(x, y, batch_size=4, state_dir=tmp_path)
    saved = json.loads((tmp_path / STATE_FILE).read_text())["_robust_flags"]
    wrapped.armed = False
    resumed = attack.run(x, y, batch_size=4, state_dir=tmp_path)
    assert batches and resumed.resumed_stages == ["apgd-ce", "apgd-t"]
    values = list(resumed.stages.values())
    assert values == sorted(values, reverse=True)
    # what FAB-T broke before the kill stays broken: the final mask is within the saved robust flags
    assert not (resumed.robust & ~torch.tensor(saved)).any()


def test_the_estimate_of_an_interrupted_evaluation_skips_its_finished_stages(model, tmp_path, monkeypatch):
    """`ibrar eval` prices a resumed AutoAttack from where it resumes (the GPU kit starts a piece only when its
    estimate fits the call): its finished stages cost nothing, the next one is priced on the exact count left."""
    import ibrar.eval_estimate
    from ibrar.data import ImageData
    from ibrar.run_eval import plan_for

    x, y = test_data(48)
    data = ImageData((x * 255).round().to(torch.uint8), y)
    wrapped = _Interruptible(model)
    attacks = {"autoattack": ReferenceAutoAttack(wrapped, EPS, **BUDGET)}

    def plan(state_dir, n=40):
        return plan_for(wrapped, data, attacks, n, 0, 16, "cpu", EPS, False, None, state_dir=state_dir)

    fresh = plan(None)
    # both plans priced on the same timings: a second measurement on a busy machine may differ several-fold
    monkeypatch.setattr(ibrar.eval_estimate, "probe", lambda *args, **kwargs: fresh.probe)
    with pytest.raises(KeyboardInterrupt), interrupt_after(wrapped, "robust accuracy after APGD-T"):
        evaluate(wrapped, data.images, data.labels, attacks, n=40, seed=0, eps=EPS, batch_size=16,
                 state_dir=tmp_path)
    wrapped.armed = False
    resumed = plan(tmp_path)
    assert resumed.resumed == ["apgd-ce", "apgd-t"] and "resumes after APGD-T" in resumed.describe()
    examples = {p.name: p.examples for p in resumed.pieces}
    left = sum(json.loads((tmp_path / PROGRESS_FILE).read_text())["stages"]["apgd-t"])
    assert examples == {"autoattack APGD-CE": 0, "autoattack APGD-T": 0, "autoattack FAB-T": left,
                        "autoattack Square": min(left, fresh.pieces[-1].examples)}
    assert resumed.seconds() < fresh.seconds()
    assert plan(tmp_path, n=39).resumed == []  # other examples: that progress is not theirs

    report = evaluate(wrapped, data.images, data.labels, attacks, n=40, seed=0, eps=EPS, batch_size=16,
                      state_dir=tmp_path)
    assert report.autoattack["resumed_stages"] == ["apgd-ce", "apgd-t"]  # the run resumed where the plan said
    assert round(report.autoattack["stages"]["apgd-t"] * 40) == left


def test_an_evaluation_killed_twice_inside_one_stage_keeps_what_the_first_call_broke(model, tmp_path):
    """The second call attacks only what the first left robust; the third must not hand the reference the
    examples the first call broke in that stage again (they lie outside the second call's subset)."""
    import ibrar.attacks.reference_autoattack as reference

    x, y = test_data(96)
    wrapped = _Interruptible(model)
    attack = ReferenceAutoAttack(wrapped, EPS, **BUDGET)
    broken = torch.zeros(len(x), dtype=torch.bool)  # what a call broke inside APGD-T before its kill
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt), interrupt_after(wrapped, "apgd-t - 2/"):
            attack.run(x, y, batch_size=4, state_dir=tmp_path)
        wrapped.armed = False
        progress = json.loads((tmp_path / PROGRESS_FILE).read_text())
        flags = torch.tensor(json.loads((tmp_path / STATE_FILE).read_text())["_robust_flags"])
        subset = torch.tensor(progress["subset"])
        broken[subset[~flags]] = True
        broken &= torch.tensor(progress["stages"]["apgd-ce"])  # APGD-T's work only
    assert broken.any()
    handed: list[list[int]] = []
    write = reference._write_progress

    def record(path, progress):
        handed.append(list(progress["subset"]))
        write(path, progress)

    reference._write_progress = record
    try:
        resumed = attack.run(x, y, batch_size=4, state_dir=tmp_path)
    finally:
        reference._write_progress = write
    assert not set(handed[0]) & set(broken.nonzero().flatten().tolist())
    assert not (resumed.robust & broken).any()


def test_the_reference_writes_no_gradient_into_the_model_and_refuses_a_float64_one(model):
    """Its FAB stage calls backward(); the model's .grad and requires_grad are as they were afterwards."""
    x, y = test_data(16)
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]  # what other tests left
    try:
        ReferenceAutoAttack(model, EPS, **BUDGET).run(x, y, batch_size=8)
        for p, grad in zip(model.parameters(), grads, strict=True):
            assert (p.grad is None) if grad is None else torch.equal(p.grad, grad)
        assert [p.requires_grad for p in model.parameters()][:2] == [False, True]
    finally:
        frozen.requires_grad_(True)
    double = copy.deepcopy(model).double()
    with pytest.raises(ValueError, match="float32"):
        ReferenceAutoAttack(double, EPS, **BUDGET).run(x.double(), y, batch_size=8)
