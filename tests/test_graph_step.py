"""The graph-ready step (ibrar.graph_step): on the CPU it runs eagerly and equals today's `TrainStep` with
`record_step` bit for bit, for every method with IB-RAR, across a mask refresh, a StepLR drop and a resume; on
CUDA its graph replays equal the eager step (marked cuda, skipped without a GPU)."""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager, nullcontext
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import tiny_config
from ibrar.checkpoint import load_file
from ibrar.config import build_config
from ibrar.graph_step import GraphCache, GraphStep, capture_plan
from ibrar.metrics import EpochStats, record_step
from ibrar.step import StepOutput, TrainStep
from ibrar.taps import tap_layers
from ibrar.train import Trainer, train

IB_RAR = {"ib": {"enabled": True}, "mask": {"enabled": True, "refresh_every": 2}}
# Every method with IB-RAR (the regularizer and the mask); tiny inner attacks. TRADES puts the IB terms on both
# passes (its authors' setting) and MART runs the mask's official rule and the post-step forward of the authors'
# scripts, so both branches of each are covered.
METHODS = {
    "ce": {"method": {"name": "ce"}},
    "pgd_at": {"method": {"name": "pgd_at", "steps": 2}},
    "trades": {"method": {"name": "trades", "steps": 2}, "ib": {"enabled": True, "passes": "both"}},
    "mart": {"method": {"name": "mart", "steps": 2},
             "mask": {"enabled": True, "refresh_every": 2, "rule": "official", "official_count": 1},
             "train": {"post_step_forward": True}},
    "vib": {"method": {"name": "vib"}},
}
STEPS, LR_DROP_AT = 12, 6  # one epoch of 12 batches of 8; the mask rescores on even steps; the rate halves at 6


def method_config(root: Path, method: str, device: str = "cpu", **extra):
    sections = {**IB_RAR, **METHODS[method], "data": {"batch_size": 8}, "optim": {"step_size": 1, "gamma": 0.5},
                "train": {"epochs": 2, "eval_pgd_steps": 0, "info_plane_every": 2, **METHODS[method].get("train", {})}}
    for key, value in extra.items():
        sections[key] = {**sections.get(key, {}), **value}
    return build_config(tiny_config(root, device=device, **sections))


class TodaysStep:
    """The trainer's loop body before the graph-ready step: `TrainStep`, then `record_step`."""

    def __init__(self, step: TrainStep, stats: EpochStats, generator: torch.Generator | None = None,
                 ib_on: bool = True, **_ignored: object) -> None:
        self.step, self.stats, self.generator, self.ib_on = step, stats, generator, ib_on

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        out = self.step(x, y, generator=self.generator, ib_on=self.ib_on)
        record_step(self.stats, out, y)
        return out


def trainer_step(trainer: Trainer, taps: dict[str, torch.Tensor]) -> TrainStep:
    """The TrainStep the trainer builds each epoch, on `taps` (opened by the caller)."""
    return trainer.train_step(taps)


def run_steps(trainer: Trainer, graph_ready: bool, capture: bool = False) -> tuple[list[torch.Tensor], EpochStats,
                                                                                  torch.Generator, Any]:
    """STEPS training steps on the trainer's pieces with either step, a StepLR drop before step LR_DROP_AT."""
    trainer.train_loader.set_epoch(0)
    batches = [b for _, b in zip(range(STEPS), trainer.train_loader, strict=False)]
    torch.manual_seed(1)  # VIB's sample draws from the global generator
    generator = torch.Generator(device=trainer.device).manual_seed(2)
    stats, losses = EpochStats(trainer.device), []
    with tap_layers(trainer.train_model, trainer._tapped_layers()) as taps:
        step = trainer_step(trainer, taps)
        runner = (GraphStep(step, stats, generator, capture=capture, warmup=1) if graph_ready
                  else TodaysStep(step, stats, generator))
        FakeGraph.world = runner
        for i, (x, y) in enumerate(batches):
            if i == LR_DROP_AT:
                trainer.scheduler.step()
            out = runner(x, y)
            losses.append(out.loss.detach().clone())
    return losses, stats, generator, runner


def model_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    if trainer.mask is not None:
        state.update({f"mask.{k}": v for k, v in trainer.mask.state_dict().items()})
    for i, s in enumerate(trainer.optimizer.state.values()):
        state.update({f"optim.{i}.{k}": v for k, v in s.items() if isinstance(v, torch.Tensor)})
    return state


@pytest.mark.parametrize("method", list(METHODS))
def test_graph_ready_step_equals_train_step_bit_for_bit(method, image_folder, tmp_path):
    config = method_config(image_folder, method)
    today, graph_ready = Trainer(config, tmp_path / "a", quiet=True), Trainer(config, tmp_path / "b", quiet=True)
    losses_a, stats_a, generator_a, _ = run_steps(today, graph_ready=False)
    losses_b, stats_b, generator_b, _ = run_steps(graph_ready, graph_ready=True)

    assert graph_ready.optimizer.param_groups[0]["lr"] == config.optim.lr / 2  # the drop happened
    assert len(losses_a) == STEPS and all(torch.equal(a, b) for a, b in zip(losses_a, losses_b, strict=True))
    state_a, state_b = model_state(today), model_state(graph_ready)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"{key} differs"
    assert int(state_b["mask.step"]) == STEPS
    assert stats_a.count == stats_b.count == STEPS
    assert stats_a.sums.keys() == stats_b.sums.keys() and stats_a.peaks.keys() == stats_b.peaks.keys()
    for key in stats_a.sums:
        assert torch.equal(stats_a.sums[key], stats_b.sums[key]), f"the sum of {key} differs"
    assert torch.equal(stats_a.peaks["grad_norm_max"], stats_b.peaks["grad_norm_max"])
    assert stats_a.means() == stats_b.means()
    assert torch.equal(generator_a.get_state(), generator_b.get_state())


def test_epoch_stats_add_in_place_what_a_running_sum_adds():
    """What a replayed graph needs: every step adds into the very tensors the first one made, and those hold what
    the running sum `s = s + v` (EpochStats before graphs) held, bit for bit; a peak never aliases a step's value."""
    values = [torch.tensor(v) for v in (0.3, -1.7, 2.9, 1e-8, 2.5)]
    stats, running = EpochStats(torch.device("cpu")), None
    for value in values:
        stats.add("x", value, 1 / 3)
        stats.peak("max", value)
        running = value * (1 / 3) if running is None else running + value * (1 / 3)
        if value is values[0]:
            tensors = (stats.sums["x"], stats.peaks["max"])
    assert stats.sums["x"] is tensors[0] and stats.peaks["max"] is tensors[1]
    assert torch.equal(stats.sums["x"], running) and float(stats.peaks["max"]) == pytest.approx(2.9)
    assert float(values[0]) == pytest.approx(0.3)  # the first value, which the peak started from, is untouched


def test_refresh_due_says_which_batches_the_mask_rescores(image_folder, tmp_path):
    trainer = Trainer(method_config(image_folder, "ce", mask={"refresh_every": 3}), tmp_path, quiet=True)
    mask, x, y = trainer.mask, torch.rand(4, 3, 32, 32), torch.arange(4)
    for _ in range(7):
        due = mask.refresh_due
        mask.observe(x, y)
        assert (mask._pending is not None) == due
        mask._pending = None
    mask.count_replayed_batch()  # as after a replay: the next batch (the 9th) is not due, the 10th is
    assert not mask.refresh_due
    mask.count_replayed_batch()
    assert mask.refresh_due


def test_the_trainer_tells_the_mask_its_epoch_length(image_folder, tmp_path):
    official = {"rule": "official", "official_count": 1, "refresh_every": 2}
    trainer = Trainer(method_config(image_folder, "mart", mask=official), tmp_path, quiet=True)
    assert trainer.mask.epoch_batches == len(trainer.train_loader) > 2


class FakeGraph:
    """A CPU stand-in for `torch.cuda.CUDAGraph`, as faithful as the CPU allows, to test GraphStep's logic here.

    Capture keeps only the Python side of the captured step (its device effects are undone afterwards); replay
    does only the device side: it reruns the step with the decisions frozen at capture (the mask's refresh, the
    optimizer's settings), leaves the host state as it found it, and writes into the captured output tensors.
    So a graph replayed on the wrong kind of batch, or after a rate change, computes something else.
    """

    world: GraphStep | None = None  # the step being captured, set by run_steps or a patched trainer

    def register_generator_state(self, generator: torch.Generator) -> None:
        self.generator = generator

    def device_state(self) -> list[torch.Tensor]:
        runner = self.world
        step = runner.step
        tensors = [*step.bare_model.state_dict(keep_vars=True).values(), *runner.stats.sums.values(),
                   *runner.stats.peaks.values()]
        tensors += [*step.mask.state_dict(keep_vars=True).values()] if step.mask is not None else []
        return tensors + [v for s in step.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]

    def begin(self) -> None:
        step = self.world.step
        self.count = step.mask.batches_counted if step.mask is not None else 0
        self.settings = [dict(g) for g in step.optimizer.param_groups]
        self.saved = ([t.detach().clone() for t in self.device_state()], self.world.generator.get_state(),
                      torch.get_rng_state())

    def end(self) -> None:
        tensors, generator_state, rng_state = self.saved
        with torch.no_grad():
            for tensor, saved in zip(self.device_state(), tensors, strict=True):
                tensor.copy_(saved)
        self.world.generator.set_state(generator_state)
        torch.set_rng_state(rng_state)

    def replay(self) -> None:
        runner = self.world
        mask, groups = runner.step.mask, runner.step.optimizer.param_groups
        host_count, host_settings = (mask.batches_counted if mask is not None else 0), [dict(g) for g in groups]
        batches = runner.stats.count  # host state too: a replay runs no Python
        for group, captured in zip(groups, self.settings, strict=True):
            group.update({k: v for k, v in captured.items() if k != "params"})
        if mask is not None:
            mask._count = self.count
        out = runner._body(runner.cache.x, runner.cache.y)
        runner.stats.count = batches
        if mask is not None:
            mask.rewind(host_count)
        for group, host in zip(groups, host_settings, strict=True):
            group.update({k: v for k, v in host.items() if k != "params"})
        (captured_out,) = [c.out for c in runner.graphs.values() if c.graph is self]
        copy_into(captured_out, out)


def copy_into(target: Any, source: Any) -> None:
    """Write `source`'s tensors into `target`'s, through dicts and dataclasses (a graph's outputs stay put)."""
    if torch.is_tensor(target):
        target.detach().copy_(source.detach())
    elif isinstance(target, dict):
        for key in target:
            copy_into(target[key], source[key])
    elif is_dataclass(target):
        for field in fields(target):
            copy_into(getattr(target, field.name), getattr(source, field.name))


class FakeStream:
    def wait_stream(self, _other: object) -> None:
        pass


@contextmanager
def fake_capture(graph: FakeGraph, stream: object = None) -> Any:
    graph.begin()
    yield
    graph.end()


def use_fake_cuda_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"CUDAGraph": FakeGraph, "graph": fake_capture, "Stream": FakeStream,
                        "stream": lambda _s: nullcontext(), "current_stream": FakeStream,
                        "set_stream": lambda _s: None}.items():
        monkeypatch.setattr(torch.cuda, name, value)


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    use_fake_cuda_graphs(monkeypatch)


@pytest.mark.parametrize("method", list(METHODS))
def test_captured_and_replayed_steps_equal_train_step_on_a_cpu_stand_in(method, image_folder, tmp_path,
                                                                        fake_cuda_graphs):
    """GraphStep's capture logic on FakeGraph: which graph replays on which batch, the host's mask counter, the
    recapture after the StepLR drop, the in-place sums; bit for bit against today's step."""
    config = method_config(image_folder, method)
    today, graphed = Trainer(config, tmp_path / "a", quiet=True), Trainer(config, tmp_path / "b", quiet=True)
    losses_a, stats_a, generator_a, _ = run_steps(today, graph_ready=False)
    losses_b, stats_b, generator_b, runner = run_steps(graphed, graph_ready=True, capture=True)

    assert runner.failures == {}
    # warmup=1: steps 0 (refresh) and 1 (plain) eager, 2 and 3 captured (and replayed), 4 and 5 replayed; the
    # drop before 6 drops both graphs: 6 and 7 eager, 8 and 9 captured anew, 10 and 11 replayed.
    assert runner.replays == 8 and set(runner.graphs) == {"refresh", "plain"}
    assert runner.eager_steps == {"refresh": 1, "plain": 1}  # counted since the drop
    assert all(torch.equal(a, b) for a, b in zip(losses_a, losses_b, strict=True))
    state_a, state_b = model_state(today), model_state(graphed)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"{key} differs"
    assert graphed.mask.batches_counted == int(state_b["mask.step"]) == STEPS
    assert stats_a.means() == stats_b.means() and stats_b.count == STEPS
    assert torch.equal(generator_a.get_state(), generator_b.get_state())


def test_a_kind_that_fails_to_capture_runs_eagerly_with_one_note(image_folder, tmp_path, fake_cuda_graphs,
                                                                 monkeypatch, capsys):
    """The refresh step's capture fails as it ends (after the step's Python ran): its host state is put back,
    refresh batches run eagerly from then on, the plain graph still replays, and one note names the error; still
    bit for bit today's step."""
    config = method_config(image_folder, "pgd_at")
    today, graphed = Trainer(config, tmp_path / "a", quiet=True), Trainer(config, tmp_path / "b", quiet=True)

    @contextmanager
    def refuse_refresh(graph: FakeGraph, stream: object = None) -> Any:
        refreshing = FakeGraph.world.step.mask.refresh_due
        with fake_capture(graph, stream):
            yield
        if refreshing:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(torch.cuda, "graph", refuse_refresh)
    losses_a, _, generator_a, _ = run_steps(today, graph_ready=False)
    losses_b, _, generator_b, runner = run_steps(graphed, graph_ready=True, capture=True)
    assert runner.failures == {"refresh": "RuntimeError: operation not permitted when stream is capturing"}
    notes = [line for line in capsys.readouterr().out.splitlines() if "could not be captured" in line]
    assert len(notes) == 1 and runner.failures["refresh"] in notes[0]
    # plain: 1 eager, 3 captured, 5 replayed; after the drop 7 eager, 9 captured, 11 replayed; refresh all eager
    assert runner.replays == 4 and set(runner.graphs) == {"plain"}
    assert all(torch.equal(a, b) for a, b in zip(losses_a, losses_b, strict=True))
    for key, tensor in model_state(today).items():
        assert torch.equal(tensor, model_state(graphed)[key]), f"{key} differs"
    assert graphed.mask.batches_counted == STEPS and torch.equal(generator_a.get_state(), generator_b.get_state())


def test_kept_graphs_are_dropped_when_what_they_hold_was_replaced(image_folder, tmp_path, fake_cuda_graphs):
    trainer = Trainer(method_config(image_folder, "pgd_at"), tmp_path, quiet=True)
    cache = GraphCache()

    def epoch() -> bool:
        """Six steps with one GraphStep on `cache`; whether it found graphs it could keep."""
        trainer.train_loader.set_epoch(0)
        with tap_layers(trainer.train_model, trainer._tapped_layers()) as taps:
            runner = GraphStep(trainer_step(trainer, taps), EpochStats(trainer.device),
                               torch.Generator().manual_seed(0), capture=True, warmup=1, cache=cache)
            FakeGraph.world, kept = runner, bool(cache.graphs)
            for _, (x, y) in zip(range(6), trainer.train_loader, strict=False):
                runner(x, y)
        assert set(cache.graphs) == {"refresh", "plain"}
        return kept

    assert not epoch() and epoch()
    state = next(iter(trainer.optimizer.state.values()))
    state["momentum_buffer"] = state["momentum_buffer"].clone()  # as a load_state_dict from a file does
    assert not epoch()


def train_preempted_then_resumed(config: Any, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train, stopped by SIGTERM after the first batch of the second epoch, then resume to the end."""
    original = Trainer.train_epoch

    def stop_in_second_epoch(self: Trainer, epoch: int) -> dict:
        if epoch == 1:
            self._stop_signal = signal.SIGTERM
        return original(self, epoch)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt, match="resume"):
        patch.setattr(Trainer, "train_epoch", stop_in_second_epoch)
        train(config, run_dir, quiet=True)
    assert load_file(run_dir / "checkpoint.pt")["batch_in_epoch"] == 1
    train(config, run_dir, resume=True, quiet=True)


def metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("seconds")
    return lines


# (the mode, the epochs, the StepLR step size, the replays of each epoch's GraphStep when captured)
TRAINER_RUNS = {
    # a drop after every epoch: each epoch warms up (4 eager steps) and captures both kinds afresh; the preempted
    # second epoch stops after its first (eager) batch; the resumed one starts at batch 1
    "eager": (False, 2, 1, None),
    "captured-on-a-cpu-stand-in": (True, 2, 1, [8, 0, 7]),
    # no drop: the graphs of epoch 1 replay from the first batch of epoch 2 (and of 3, after the resume warmed up)
    "captured-graphs-kept-across-epochs": (True, 3, 10, [8, 1, 7, 12]),
}


@pytest.mark.parametrize("run", list(TRAINER_RUNS))
def test_trainer_with_the_graph_ready_step_equals_todays_across_a_drop_and_a_resume(run, image_folder, tmp_path,
                                                                                   monkeypatch):
    """PGD-AT with IB-RAR (mask refreshes in every epoch, the information plane every 2 steps) through the
    trainer, preempted in the second epoch and resumed, ends bit for bit where today's loop ends uninterrupted:
    with the graph-ready step run eagerly, and captured and replayed on FakeGraph, with StepLR drops between
    epochs or graphs kept from one epoch to the next."""
    capture, epochs, step_size, replays = TRAINER_RUNS[run]
    config = method_config(image_folder, "pgd_at", train={"eval_pgd_steps": 1, "epochs": epochs},
                           optim={"step_size": step_size})
    with monkeypatch.context() as patch:
        patch.setattr("ibrar.train.GraphStep", TodaysStep)
        train(config, tmp_path / "today", quiet=True)
    made: list[GraphStep] = []
    if capture:
        def captured_by_fake_graphs(*args: Any, **kwargs: Any) -> GraphStep:
            FakeGraph.world = GraphStep(*args, **{**kwargs, "capture": True})
            made.append(FakeGraph.world)
            return FakeGraph.world

        use_fake_cuda_graphs(monkeypatch)
        monkeypatch.setattr("ibrar.train.GraphStep", captured_by_fake_graphs)

    train_preempted_then_resumed(config, tmp_path / "graph", monkeypatch)

    today, graph = load_file(tmp_path / "today" / "final.pt"), load_file(tmp_path / "graph" / "final.pt")
    for part in ("model", "mask"):
        assert today[part].keys() == graph[part].keys()
        for key, tensor in today[part].items():
            assert torch.equal(tensor, graph[part][key]), f"{part}.{key} differs"
    assert metrics(tmp_path / "today") == metrics(tmp_path / "graph")
    plane = [(tmp_path / name / "info_plane.jsonl").read_text() for name in ("today", "graph")]
    assert plane[0] == plane[1] and plane[0]
    if capture:
        assert [r.replays for r in made] == replays and not any(r.failures for r in made)


@pytest.mark.parametrize(("setting", "device", "flags", "capture", "note"), [
    ("auto", "cpu", {}, False, None),
    (True, "cpu", {}, False, "CUDA-only"),
    (False, "cuda", {}, False, None),
    ("auto", "cuda", {}, True, None),
    (True, "cuda", {"distributed": True}, False, "DistributedDataParallel"),
    ("auto", "cuda", {"compiled": True}, False, "train.compile"),
    ("auto", "cuda", {"median_bandwidth": True}, False, "ib.bandwidth=median"),
])
def test_capture_plan_captures_on_cuda_only_where_the_configuration_allows(setting, device, flags, capture, note):
    got_capture, got_note = capture_plan(setting, torch.device(device), **flags)
    assert got_capture == capture
    assert (got_note is None) == (note is None) and (note is None or note in got_note)


def test_cuda_graph_key_accepts_auto_and_booleans(image_folder):
    assert method_config(image_folder, "ce").train.cuda_graph == "auto"
    assert method_config(image_folder, "ce", train={"cuda_graph": False}).train.cuda_graph is False
    with pytest.raises(ValueError, match="cuda_graph"):
        method_config(image_folder, "ce", train={"cuda_graph": "sometimes"})


def test_graph_step_refuses_a_capture_without_warmup(image_folder, tmp_path):
    trainer = Trainer(method_config(image_folder, "ce"), tmp_path, quiet=True)
    step = TrainStep(trainer.model, trainer.model, trainer.method, trainer.optimizer, {})
    with pytest.raises(ValueError, match="warmup"):
        GraphStep(step, EpochStats(trainer.device), warmup=0)


# -- CUDA: replay against eager --------------------------------------------------------------------------------
# Replay runs the kernels the eager step launches, on the same inputs and random draws, so the two differ only
# where a kernel itself is not deterministic (cuDNN's algorithms are pinned to deterministic ones in these tests;
# cuBLAS on two streams may still round differently): about 1e-7 relative per step. Twelve steps of a tiny model
# stay far inside 1e-4; 1e-3 leaves room for the rare sign flip of a near-zero input gradient in the inner attack
# (one pixel moved by 2 alpha, where the loss hardly depends on it), which no graph bug resembles: a stale rate, a
# missed refresh or a replayed random start moves every weight by the order of the update itself.
REPLAY_RTOL, REPLAY_ATOL = 1e-3, 1e-5
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu/run.sh check)")


@pytest.mark.cuda
@NEEDS_CUDA
@pytest.mark.parametrize(("method", "train_extra"), [
    *[pytest.param(name, {}, id=name) for name in METHODS],
    pytest.param("pgd_at", {"amp": True}, id="pgd_at+bf16"),
])
def test_cuda_graph_replay_equals_eager(method, train_extra, image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    config = method_config(image_folder, method, device="cuda", train=train_extra)
    eager, graphed = Trainer(config, tmp_path / "a", quiet=True), Trainer(config, tmp_path / "b", quiet=True)
    losses_a, stats_a, generator_a, _ = run_steps(eager, graph_ready=False)
    losses_b, stats_b, generator_b, runner = run_steps(graphed, graph_ready=True, capture=True)

    assert runner.failures == {}, runner.failures
    # warmup=1: steps 0 (refresh) and 1 (plain) eager, 2 and 3 captured (and replayed), 4 and 5 replayed; the
    # drop before 6 drops both graphs: 6 and 7 eager, 8 and 9 captured anew, 10 and 11 replayed.
    assert runner.replays == 8 and set(runner.graphs) == {"refresh", "plain"}
    assert runner.eager_steps == {"refresh": 1, "plain": 1}  # counted since the drop
    torch.testing.assert_close(torch.stack(losses_b), torch.stack(losses_a), rtol=REPLAY_RTOL, atol=REPLAY_ATOL)
    state_a, state_b = model_state(eager), model_state(graphed)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=REPLAY_RTOL, atol=REPLAY_ATOL, msg=key)
    assert int(state_b["mask.step"]) == STEPS and graphed.mask.batches_counted == STEPS
    assert stats_b.count == STEPS and stats_a.sums.keys() == stats_b.sums.keys()
    for key in stats_a.sums:
        torch.testing.assert_close(stats_b.sums[key], stats_a.sums[key], rtol=REPLAY_RTOL, atol=REPLAY_ATOL,
                                   msg=key)
    # The attack's generator advanced exactly as the eager steps advance it (checkpoints store its state).
    assert torch.equal(generator_a.get_state(), generator_b.get_state())


@pytest.mark.cuda
@NEEDS_CUDA
@pytest.mark.parametrize(("step_size", "replays"), [(1, [8, 0, 7, 8]), (10, [8, 1, 7, 12])],
                         ids=["recaptured-after-each-drop", "kept-across-epochs"])
def test_cuda_trainer_with_graphs_matches_the_eager_trainer(step_size, replays, image_folder, tmp_path, capsys,
                                                            monkeypatch):
    """Three epochs of PGD-AT with IB-RAR through the trainer: eager and uninterrupted, against CUDA graphs
    preempted in the second epoch and resumed (the checkpoint holds the graphs' generator): the same run within
    the tolerance, graphs replayed as planned (see TRAINER_RUNS), and no note of a failed capture."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    config = {setting: method_config(image_folder, "pgd_at", device="cuda", optim={"step_size": step_size},
                                     train={"epochs": 3, "cuda_graph": setting}) for setting in (False, True)}
    train(config[False], tmp_path / "eager", quiet=True)
    made: list[GraphStep] = []

    def recorded(*args: Any, **kwargs: Any) -> GraphStep:
        made.append(GraphStep(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("ibrar.train.GraphStep", recorded)
    train_preempted_then_resumed(config[True], tmp_path / "graphs", monkeypatch)

    assert "could not be captured" not in capsys.readouterr().out
    assert [r.replays for r in made] == replays and not any(r.failures for r in made)
    eager, graphed = load_file(tmp_path / "eager" / "final.pt"), load_file(tmp_path / "graphs" / "final.pt")
    for part in ("model", "mask"):
        for key, tensor in eager[part].items():
            torch.testing.assert_close(graphed[part][key].float(), tensor.float(), rtol=REPLAY_RTOL,
                                       atol=REPLAY_ATOL, msg=f"{part}.{key}")
    eager_lines, graphed_lines = metrics(tmp_path / "eager"), metrics(tmp_path / "graphs")
    assert len(eager_lines) == len(graphed_lines) == 3
    for a, b in zip(eager_lines, graphed_lines, strict=True):
        assert a.keys() == b.keys() and a["lr"] == b["lr"]
        for key in ("loss", "grad_norm", "ib_penalty"):
            assert b[key] == pytest.approx(a[key], rel=REPLAY_RTOL, abs=REPLAY_ATOL), key
