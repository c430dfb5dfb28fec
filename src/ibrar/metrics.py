"""What a run reports per epoch: device-side running sums, the live loss readout, spike notes, the progress
line a user reads, and the optional TensorBoard writer.

Nothing here reads the device inside the step: sums stay on the device and are read once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ibrar.host_sync import sync_allowed

SPIKE_FACTOR = 10.0  # a gradient norm or loss this many times the usual is logged as a spike
# An IB loss (CE - lambda * HSIC(Y, Z)) can sit near zero or below it: a loss's rise is measured against
# at least this much, so one that moves by a few hundredths of a nat near zero is not called a spike.
LOSS_SCALE_FLOOR = 0.1


@dataclass
class EpochStats:
    """Running sums on the device: no host synchronisation inside the step. Each sum is one tensor, updated in
    place, so that a step captured as a CUDA graph (`ibrar.graph_step`) keeps adding into it on every replay."""

    device: torch.device
    sums: dict[str, Tensor] = field(default_factory=dict)
    peaks: dict[str, Tensor] = field(default_factory=dict)
    count: int = 0

    def add(self, name: str, value: Tensor, weight: float = 1.0) -> None:
        value = value.detach().float() * weight
        if name in self.sums:
            self.sums[name].add_(value)
        else:
            self.sums[name] = value.clone()

    def peak(self, name: str, value: Tensor) -> None:
        """Keep the largest value seen (reported as is, not averaged)."""
        value = value.detach().float()
        if name in self.peaks:
            torch.maximum(self.peaks[name], value, out=self.peaks[name])
        else:
            self.peaks[name] = value.clone()  # not the step's own tensor, which the next step overwrites

    def means(self) -> dict[str, float]:
        names, peaks = list(self.sums), list(self.peaks)
        if not names and not peaks:
            return {}
        values = torch.stack([self.sums[n] for n in names] + [self.peaks[n] for n in peaks]).cpu().tolist()
        out = {n: v / max(self.count, 1) for n, v in zip(names, values[: len(names)], strict=True)}
        out.update(zip(peaks, values[len(names):], strict=True))
        return out


def record_step(stats: EpochStats, step: Any, y: Tensor) -> None:
    """Add one step's numbers (a `StepOutput`) to the epoch's sums: losses, IB terms, gradient norm, accuracy."""
    passes = len(step.ib)
    for terms in step.ib.values():
        stats.add("ib_penalty", terms.loss)
        for layer in terms.hsic_x:
            stats.add(f"hsic_x/{layer}", terms.hsic_x[layer], 1 / passes)
            stats.add(f"hsic_y/{layer}", terms.hsic_y[layer], 1 / passes)
    stats.add("grad_norm", step.grad_norm)
    stats.peak("grad_norm_max", step.grad_norm)
    stats.add("loss", step.loss)
    for part, value in step.method.parts.items():
        stats.add(f"loss_{part}", value)
    stats.add("train_acc", (step.method.logits.detach().argmax(1) == y).float().mean())
    stats.count += 1


class LossReadout:
    """The progress bar's live loss without waiting for the device.

    On CUDA the loss is copied asynchronously into pinned host memory and shown once the copy has landed
    (a few batches late); on the CPU it is read directly. Either way the step never waits for the GPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False

    def push(self, loss: Tensor) -> None:
        if self.event is not None and self.pending and not self.event.query():
            return  # the last copy is still in flight: skip this one rather than wait
        self.host.copy_(loss.detach().float(), non_blocking=self.cuda)
        if self.event is not None:
            self.event.record()
        self.pending = True

    def latest(self) -> float | None:
        if not self.pending or (self.event is not None and not self.event.query()):
            return None
        with sync_allowed():  # a host tensor whose copy has completed
            return float(self.host)


def spike_notes(epoch: int, means: dict[str, Any], previous: dict[str, Any]) -> list[str]:
    """A gradient-norm spike within the epoch or a loss jump from the last epoch, as sentences (logged, not
    fatal). Only a rise is a jump: the IB loss can fall below zero, and a fall is training working."""
    notes = []
    if means.get("grad_norm_max", 0.0) > SPIKE_FACTOR * max(means.get("grad_norm", 0.0), 1e-12):
        notes.append(f"gradient-norm spike in epoch {epoch}: max {means['grad_norm_max']:.3g} vs mean "
                     f"{means['grad_norm']:.3g}")
    if previous.get("loss") is not None and means.get("loss") is not None and (
            means["loss"] - previous["loss"] > (SPIKE_FACTOR - 1) * max(abs(previous["loss"]), LOSS_SCALE_FLOOR)):
        notes.append(f"loss spike in epoch {epoch}: {means['loss']:.4g} after {previous['loss']:.4g}")
    return notes


def progress_line(line: dict[str, Any], epochs: int) -> str:
    """One epoch as a user reads it: `epoch 3/8  loss 0.302  train 53.2%  clean 57.5%  PGD-10 1.0%  88 s`."""
    parts = [f"epoch {line['epoch']}/{epochs}"]
    if "loss" in line:
        parts.append(f"loss {line['loss']:.3f}")
    if "train_acc" in line:
        parts.append(f"train {100 * line['train_acc']:.1f}%")
    if "test_clean_acc" in line:
        parts.append(f"clean {100 * line['test_clean_acc']:.1f}%")
    for key, value in line.items():
        if key.startswith("test_pgd") and key.endswith("_acc"):
            parts.append(f"PGD-{key.removeprefix('test_pgd').removesuffix('_acc')} {100 * value:.1f}%")
    parts.append(f"{line['seconds']:.0f} s")
    return "  ".join(parts)


def plane_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Information-plane measurements (device tensors) as JSON-ready rows, read once per epoch in one transfer."""
    values = [v for r in rows for part in ("hsic_x", "hsic_y") for v in r[part].values()]
    read = iter(torch.stack([v.detach().double() for v in values]).tolist() if values else [])
    return [{"iteration": r["iteration"], "epoch": r["epoch"],
             **{part: {k: next(read) for k in r[part]} for part in ("hsic_x", "hsic_y")}} for r in rows]


def tensorboard_writer(run_dir: Path, log: Any) -> Any:
    """A SummaryWriter on `run_dir/tensorboard` when tensorboard is installed; else a note and None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("train.tensorboard: tensorboard is not installed (pip install 'ibrar[tensorboard]'); "
            "metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
