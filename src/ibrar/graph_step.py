"""The training step as CUDA graphs: `ibrar.step.TrainStep` and the epoch's metric sums, captured once and
replayed, so that a step costs a few launches instead of hundreds (on a GPU a batch-100 step is launch-bound).

How the step's per-batch Python decisions fit into a graph that replays the same kernels every time:

- The inputs: every batch is copied into two static buffers the graph reads.
- The mask's refresh cadence: `ChannelMask.observe` rescores on every k-th batch. A graph cannot branch, so there
  are two: "refresh" (the mask rescored, then applied) and "plain", each captured on a batch of its kind. The host
  knows which one a batch needs from the mask's host counter (`ChannelMask.refresh_due`), without reading the
  device, and moves that counter on after a replay (`count_replayed_batch`); the graph moves the device's.
- The learning rate and every other optimizer setting enter a graph as the numbers they were at capture (SGD
  reads even a Tensor lr into a constant there). Before each step the optimizer's settings (host floats) are
  compared with those the graphs hold, and the graphs are dropped and captured anew when one moved: a StepLR
  drop can never leave a stale rate inside a graph, and the optimizer stays plain `torch.optim.SGD`.
- The inner attack's randomness: the attack's generator is registered with each graph
  (`CUDAGraph.register_generator_state`), and the default CUDA generator (VIB's sample, dropout) is registered by
  PyTorch itself; each replay draws what the eager step would have drawn from the same state and advances the
  generator as far, so the checkpointed generator state stays right.
- The metric sums: `ibrar.metrics.record_step` adds each step's numbers in place into `EpochStats` tensors made
  before capture, so every replay keeps adding to the same sums (the trainer reads them once per epoch); the host
  counts the replayed batches.
- From one epoch to the next (`GraphCache`, held by the trainer): the graphs stay, and the new epoch's sums
  (zero, or a resumed epoch's) and its generator's state are written into the tensors and the generator they are
  bound to; only a moved setting (or `ib.epochs` switching the IB terms off) makes them captured again.
- The information plane and the non-finite check read the step's outputs (`StepOutput`), which are the graph's
  own output tensors: after a replay they hold that batch's values until the next one.

The steps before a kind's graph exists are eager (PyTorch asks for warm-up iterations before capture; they are
real training steps here, on a side stream), and so is any batch of another shape (the epoch's last, when
short). A kind of step that fails to capture runs eagerly from then on (the trainer keeps the failures for the
whole run), with one note naming the error; the other kind still replays.

The float64 solves of the IB terms and of the mask's scores (`torch.linalg.solve_ex`, which reads no error flag
back) are captured through cuSOLVER and cuBLAS: capture asks for that backend
(`torch.backends.cuda.preferred_linalg_library`), whose LU takes its workspace from PyTorch's allocator, whereas
MAGMA's batched LU, which some torch builds still pick for the mask's many small systems, may allocate outside it
(a capture refuses that). Not captured, by design (`capture_plan`: the eager step, with a note): DDP,
`train.compile`, and `ib.bandwidth=median` (its boolean indexing has a data-dependent size).

On the CPU (and wherever capture is off) the same step runs eagerly: `TrainStep` then `record_step`, bit for bit
what the trainer ran before graphs (tests/test_graph_step.py, which also replays it on a CPU stand-in for CUDA
graphs that keeps only the device side of a replay).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from ibrar.host_sync import sync_allowed
from ibrar.metrics import EpochStats, record_step
from ibrar.step import StepOutput, TrainStep

CUDA_GRAPH_WARMUP = 2  # eager steps of a kind before its graph is captured, and again after a drop (PyTorch asks)


def capture_plan(setting: bool | str, device: torch.device, distributed: bool = False, compiled: bool = False,
                 median_bandwidth: bool = False) -> tuple[bool, str | None]:
    """Whether to capture the step (train.cuda_graph: "auto", True or False), and the note to print when a
    configuration that asked for it (or left it on auto) gets the eager step instead."""
    if setting is False or setting == "false":
        return False, None
    if device.type != "cuda":
        note = f"train.cuda_graph: CUDA graphs are CUDA-only; the step runs eagerly on the {device.type}"
        return False, note if setting is True or setting == "true" else None
    blockers = []
    if distributed:
        blockers.append("DistributedDataParallel (its gradient all-reduce is not captured here)")
    if compiled:
        blockers.append("train.compile (a compiled model brings its own graphs)")
    if median_bandwidth:
        blockers.append("ib.bandwidth=median (its median reads a data-dependent number of distances)")
    if blockers:
        return False, f"train.cuda_graph: the step runs eagerly, not as a CUDA graph, because of {'; '.join(blockers)}"
    return True, None


@contextlib.contextmanager
def _capturable_linalg() -> Iterator[None]:
    """Solve through cuSOLVER / cuBLAS inside the block (their LU allocates nothing outside PyTorch's pools)."""
    previous = torch.backends.cuda.preferred_linalg_library()
    torch.backends.cuda.preferred_linalg_library("cusolver")
    try:
        yield
    finally:
        torch.backends.cuda.preferred_linalg_library(previous)


@dataclasses.dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    out: StepOutput


@dataclasses.dataclass
class GraphCache:
    """A run's graphs and everything they are bound to, handed from one epoch's GraphStep to the next (the trainer
    holds one), so that graphs are captured once per run and again only when something they hold moves."""

    graphs: dict[str, _Captured] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)  # kind -> why its capture failed
    settings: list[tuple[str, Any]] | None = None  # the optimizer settings and IB switches the graphs hold
    pieces: tuple[Any, ...] = ()  # the modules and optimizer state they were captured with (`_pieces`)
    generator: torch.Generator | None = None  # the generator they are registered with
    sums: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # the tensors they add the metrics into
    peaks: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    x: Tensor | None = None  # the static input buffers they read
    y: Tensor | None = None


class GraphStep:
    """One epoch's training steps: `step(x, y, generator, ib_on)` plus the sums in `stats`, as CUDA graphs when
    `capture` (see the module docstring), eagerly otherwise. Call it once per batch.

    `warmup` eager steps of each kind come before its capture. `cache` carries the graphs to the next epoch's
    GraphStep: when they still fit, that one binds the epoch's sums and generator to them (`generator` is then the
    cache's, holding the epoch's state: read it there) and replays from the first batch. A kind of step whose
    capture failed runs eagerly for as long as the cache lives; `log` receives the one note of each failure.
    """

    def __init__(self, step: TrainStep, stats: EpochStats, generator: torch.Generator | None = None,
                 ib_on: bool = True, capture: bool = False, warmup: int = CUDA_GRAPH_WARMUP,
                 cache: GraphCache | None = None, log: Callable[[str], None] = print) -> None:
        if warmup < 1:
            raise ValueError(f"warmup: expected at least one eager step before a capture, got {warmup}")
        if capture and isinstance(step.autocast, torch.autocast):
            # The autocast cache would keep casts made during capture; a cacheless autocast computes the same.
            step = dataclasses.replace(step, autocast=torch.autocast(
                step.autocast.device, dtype=step.autocast.fast_dtype, enabled=step.autocast._enabled,
                cache_enabled=False))
        self.step, self.stats, self.generator, self.ib_on = step, stats, generator, ib_on
        self.capture, self.warmup, self.log = capture, warmup, log
        self.cache = cache if cache is not None else GraphCache()
        self.eager_steps: dict[str, int] = {"refresh": 0, "plain": 0}
        self.replays = 0
        self._side = torch.cuda.Stream() if capture else None
        if capture and self.cache.graphs:
            self._adopt_cached_graphs()

    @property
    def graphs(self) -> dict[str, _Captured]:
        return self.cache.graphs

    @property
    def failures(self) -> dict[str, str]:
        return self.cache.failures

    def __call__(self, x: Tensor, y: Tensor) -> StepOutput:
        out = self._graph_step(x, y) if self.capture else None
        return out if out is not None else self._eager(x, y)

    def _body(self, x: Tensor, y: Tensor) -> StepOutput:
        """What every step does and every graph holds: Algorithm 1's step, then its numbers into the sums."""
        out = self.step(x, y, generator=self.generator, ib_on=self.ib_on)
        record_step(self.stats, out, y)
        return out

    def _kind(self) -> str:
        mask = self.step.mask
        return "refresh" if mask is not None and mask.refresh_due else "plain"

    def _settings(self) -> list[tuple[str, Any]]:
        """Every optimizer setting as a graph holds it, and the IB switches. A CPU tensor (a Tensor lr) is read by
        value, as SGD reads it into a captured constant; a device tensor is compared by identity, never read."""
        def held(value: Any) -> Any:
            if isinstance(value, Tensor):
                return float(value) if value.device.type == "cpu" and value.numel() == 1 else id(value)
            return value

        return [(key, held(value)) for group in self.step.optimizer.param_groups for key, value in group.items()
                if key != "params"] + [("ib_on", self.ib_on), ("ib_passes", self.step.ib_passes)]

    def _pieces(self) -> tuple[Any, ...]:
        """What the graphs hold by address: the modules and, since `load_state_dict` replaces them, the
        optimizer's state tensors (a model's parameters and buffers are loaded in place)."""
        s = self.step
        state = [v for group in s.optimizer.state.values() for v in group.values() if isinstance(v, Tensor)]
        return (s.model, s.bare_model, s.optimizer, s.mask, s.method, s.regularizer, *state)

    def _drop_graphs(self) -> None:
        self.cache.graphs.clear()
        self.eager_steps = dict.fromkeys(self.eager_steps, 0)

    def _adopt_cached_graphs(self) -> None:
        """Bind this epoch to the cached graphs: its sums and peaks (none yet, or a resumed epoch's) and its
        generator's state go into the tensors and the generator the graphs hold. Graphs that no longer fit are
        dropped."""
        cache, stats = self.cache, self.stats
        pieces = self._pieces()
        fits = (cache.settings == self._settings() and len(cache.pieces) == len(pieces)
                and all(a is b for a, b in zip(cache.pieces, pieces, strict=True))
                and (cache.generator is None) == (self.generator is None)
                and set(stats.sums) <= set(cache.sums) and set(stats.peaks) <= set(cache.peaks))
        if not fits:
            self._drop_graphs()
            return
        with torch.no_grad():
            for name, tensor in cache.sums.items():
                tensor.copy_(stats.sums[name]) if name in stats.sums else tensor.zero_()
            for name, tensor in cache.peaks.items():
                tensor.copy_(stats.peaks[name]) if name in stats.peaks else tensor.fill_(float("-inf"))
        stats.sums.update(cache.sums)
        stats.peaks.update(cache.peaks)
        if self.generator is not None:
            cache.generator.set_state(self.generator.get_state())
            self.generator = cache.generator

    # -- eager --
    def _eager(self, x: Tensor, y: Tensor) -> StepOutput:
        kind = self._kind()
        self.eager_steps[kind] += 1
        if self._side is None:
            return self._body(x, y)
        # PyTorch's recipe: the eager (warm-up) iterations run on a side stream that the current one waits for.
        current = torch.cuda.current_stream()
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            out = self._body(x, y)
        current.wait_stream(self._side)
        return out

    # -- graphs --
    def _graph_step(self, x: Tensor, y: Tensor) -> StepOutput | None:
        """The step as a replay (capturing its graph first when due), or None where it must run eagerly."""
        cache = self.cache
        if cache.graphs and cache.settings != self._settings():  # the schedule moved the rate: graphs hold the old
            self._drop_graphs()
        if cache.x is None:
            cache.x, cache.y = torch.empty_like(x), torch.empty_like(y)
        if x.shape != cache.x.shape or y.shape != cache.y.shape or x.dtype != cache.x.dtype:
            return None  # a batch of another size (the epoch's last): eager
        kind = self._kind()
        captured = cache.graphs.get(kind)
        if captured is None:
            if self.eager_steps[kind] < self.warmup or kind in cache.failures:
                return None
            return self._capture(kind, x, y)
        cache.x.copy_(x)
        cache.y.copy_(y)
        captured.graph.replay()
        if self.step.mask is not None:
            self.step.mask.count_replayed_batch()
        self.stats.count += 1  # what record_step counts on the host when it runs
        self.replays += 1
        return captured.out

    def _capture(self, kind: str, x: Tensor, y: Tensor) -> StepOutput | None:
        """Capture this batch's step as the graph of its kind and replay it (capture itself runs nothing)."""
        cache, mask = self.cache, self.step.mask
        host_count, batches = (mask.batches_counted if mask is not None else 0), self.stats.count
        generator_state = self.generator.get_state() if self.generator is not None else None
        names = (set(self.stats.sums), set(self.stats.peaks))
        cache.x.copy_(x)
        cache.y.copy_(y)
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            if self.generator is not None:
                graph.register_generator_state(self.generator)
            # Capture synchronises the device once, before it starts: allowed under train.forbid_host_sync, whose
            # check keeps watching the eager steps (a graph's replay cannot synchronise). It runs on the stream
            # the warm-up ran on, so that per-stream library state (cuBLAS' workspace) exists before it.
            with sync_allowed(), _capturable_linalg(), torch.cuda.graph(graph, stream=self._side):
                out = self._body(cache.x, cache.y)
            if (set(self.stats.sums), set(self.stats.peaks)) != names:
                raise RuntimeError("a metric appeared for the first time inside the capture")
        except Exception as error:  # any failure: this kind of step runs eagerly, with the reason said once
            torch.cuda.set_stream(stream)  # a capture that failed to end leaves its stream current
            self.stats.count = batches
            if mask is not None:
                mask.rewind(host_count)
            if generator_state is not None:
                self.generator.set_state(generator_state)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            cache.failures[kind] = f"{type(error).__name__}: {reason}"
            self.log(f"note: train.cuda_graph: the {kind} step could not be captured as a CUDA graph "
                     f"({cache.failures[kind]}); it runs eagerly from now on")
            return None
        # Every graph of the cache is bound to the same sums, generator and settings: this epoch's.
        cache.graphs[kind] = _Captured(graph, out)
        cache.settings, cache.pieces, cache.generator = self._settings(), self._pieces(), self.generator
        cache.sums, cache.peaks = dict(self.stats.sums), dict(self.stats.peaks)
        graph.replay()
        self.replays += 1
        return out
