"""The training loop: one run folder per run, resumable, with the IB-RAR penalty and mask around any method.

A run folder holds `config.yaml` (resolved), `meta.json` (versions, hardware, seed), `metrics.jsonl` (one line
per epoch), `info_plane.jsonl` (HSIC(X, T_l), HSIC(Y, T_l) every K iterations), `checkpoint.pt` (latest,
written atomically at every epoch end, or mid-epoch on SIGTERM/SIGINT) and `final.pt` (weights and mask).
Every epoch is a pure function of (weights, seed, epoch), so a resumed run ends bit-identical on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ibrar.build import (
    build_model,
    build_optimizer,
    build_regularizer,
    build_training_method,
    check_model_config,
    load_data,
    resolve_device,
)
from ibrar.checkpoint import FINAL, LATEST, load_file, load_state, save_atomic
from ibrar.config import RunConfig
from ibrar.data import BatchLoader
from ibrar.data.loader import balanced_subset, derived_seed
from ibrar.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_buffers,
    init_from_env,
)
from ibrar.host_sync import forbid_host_sync, sync_allowed
from ibrar.jsonl import append_jsonl, truncate_jsonl
from ibrar.reproducibility import run_metadata
from ibrar.run_folder import INFO_PLANE_FILE, METRICS_FILE, check_run_dir, create_run_dir
from ibrar.taps import tap_layers, unwrap

SPIKE_FACTOR = 10.0  # a gradient norm or loss this many times the usual is logged as a spike


class NonFiniteLossError(RuntimeError):
    """The loss or an HSIC term became NaN/Inf; the last good checkpoint is kept."""


# ---- the loop ----------------------------------------------------------------------------------------


@dataclass
class EpochStats:
    """Running sums on the device: no host synchronisation inside the step."""

    device: torch.device
    sums: dict[str, Tensor] = field(default_factory=dict)
    peaks: dict[str, Tensor] = field(default_factory=dict)
    count: int = 0

    def add(self, name: str, value: Tensor, weight: float = 1.0) -> None:
        value = value.detach().float() * weight
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def peak(self, name: str, value: Tensor) -> None:
        """Keep the largest value seen (reported as is, not averaged)."""
        value = value.detach().float()
        self.peaks[name] = torch.maximum(self.peaks[name], value) if name in self.peaks else value

    def means(self) -> dict[str, float]:
        names, peaks = list(self.sums), list(self.peaks)
        if not names and not peaks:
            return {}
        values = torch.stack([self.sums[n] for n in names] + [self.peaks[n] for n in peaks]).cpu().tolist()
        out = {n: v / max(self.count, 1) for n, v in zip(names, values[: len(names)], strict=True)}
        out.update(zip(peaks, values[len(names):], strict=True))
        return out


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


class Trainer:
    """Owns the state of one run: model, mask, optimizer, schedule, data, and the folder it writes."""

    def __init__(self, config: RunConfig, run_dir: Path, data_root: str | Path | None = None,
                 quiet: bool = False) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        self.dist = init_from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.quiet = quiet or not self.dist.is_main
        torch.manual_seed(config.seed)
        self.train_data, self.test_data = load_data(config, data_root)
        self.num_classes = self.train_data.num_classes
        self.input_size = int(self.train_data.images.shape[-1])
        self.bundle = build_model(config, self.num_classes, self.input_size)
        self.model = self.bundle.model.to(self.device)
        if config.train.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        # The mask is hooked in, not a submodule: its buffer moves to the device by itself.
        self.mask = self.bundle.mask.to(self.device) if self.bundle.mask is not None else None
        self.method = build_training_method(config)
        self.method.attach(self.model)
        self.regularizer = build_regularizer(config, self.bundle, self.num_classes) if config.ib.enabled else None
        self.plane_regularizer = (build_regularizer(config, self.bundle, self.num_classes, self.bundle.ib_layers)
                                  if config.train.info_plane_every else None)
        self.optimizer, self.scheduler = build_optimizer(config, self.model)
        # The module that trains: wrapped by DDP under torchrun, compiled when asked (CUDA only).
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.train.compile and self.device.type == "cuda":
            self.train_model = torch.compile(self.train_model)
        fast_path = [k for k in ("amp", "channels_last", "compile") if getattr(config.train, k)]
        if fast_path and self.device.type != "cuda" and not self.quiet:
            tqdm.write(f"note: {', '.join('train.' + k for k in fast_path)} belong to the CUDA fast path and are "
                       f"off on the {self.device.type}")
        self.train_loader = BatchLoader(self.train_data, config.data.batch_size, shuffle=True,
                                        augment=config.data.augment, seed=config.seed, device=self.device,
                                        subset=config.data.train_subset, rank=self.dist.rank,
                                        world_size=self.dist.world_size)
        self.monitor_loader = self._monitor_loader()
        self.epoch = 0
        self.iteration = 0
        self.batch_in_epoch = 0  # > 0 only in a checkpoint written by a preempted (signalled) run
        self._partial: dict[str, Any] | None = None  # that checkpoint's mid-epoch state
        self._stop_signal: int | None = None

    def _monitor_loader(self) -> BatchLoader | None:
        """The fixed test subset of the per-epoch accuracies; each rank takes every world_size-th example."""
        cfg = self.config
        n = min(cfg.train.eval_subset, len(self.test_data))
        if not n:
            return None
        chosen = balanced_subset(self.test_data.labels, n, cfg.seed)[self.dist.rank :: self.dist.world_size]
        if chosen.numel() == 0:
            return None
        return BatchLoader(self.test_data, cfg.eval.batch_size, shuffle=False, augment=False, seed=cfg.seed,
                           device=self.device, indices=chosen)

    # -- checkpoints --
    def state(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "mask": self.mask.state_dict() if self.mask is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "batch_in_epoch": self.batch_in_epoch,
            "partial": self._partial,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": self.config.model_dump(mode="json"),
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            save_atomic(self.state(), self.run_dir / LATEST)
        barrier()

    def load_checkpoint(self) -> bool:
        path = self.run_dir / LATEST
        if not path.is_file():
            return False
        state = load_file(path, map_location=self.device)
        load_state(unwrap(self.model), state["model"], "model", path)
        if self.mask is not None and state.get("mask") is not None:
            load_state(self.mask, state["mask"], "channel mask", path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.batch_in_epoch = int(state.get("batch_in_epoch") or 0)
        self._partial = state.get("partial")
        torch.set_rng_state(state["rng_cpu"].cpu())
        if state.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return True

    # -- one step --
    def _ib_active(self, epoch: int) -> bool:
        ib = self.config.ib
        return self.regularizer is not None and (ib.epochs is None or epoch < ib.epochs)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        config = self.config
        model, method = self.train_model, self.method
        model.train()
        self.train_loader.set_epoch(epoch)
        # Everything random in this epoch derives from (seed, epoch): resuming reproduces it exactly.
        torch.manual_seed(derived_seed(config.seed, epoch, 7))
        stream = (config.seed, epoch, 2) if not self.dist.enabled else (config.seed, epoch, 2, self.dist.rank)
        attack_generator = torch.Generator(device=self.device).manual_seed(derived_seed(*stream))
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.train.amp and self.device.type == "cuda"
                    else contextlib.nullcontext())
        ib_on = self._ib_active(epoch)
        stats = EpochStats(self.device)
        start_batch, partial = self.batch_in_epoch, self._partial
        if partial is not None:  # resuming a preempted epoch: continue its random streams and its sums
            attack_generator.set_state(partial["attack_rng"].cpu())
            torch.set_rng_state(partial["rng_cpu"].cpu())
            stats.sums, stats.count = dict(partial["stats"]), int(partial["count"])
        plane_rows: list[dict[str, Any]] = []
        plane_every = config.train.info_plane_every
        tapped = set(self.regularizer.layers if self.regularizer else ())
        if self.plane_regularizer is not None:
            tapped |= set(self.plane_regularizer.layers)
        bad_batch = torch.full((), -1, dtype=torch.long, device=self.device)
        bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch + 1}/{config.train.epochs}",
                   disable=self.quiet, leave=False, dynamic_ncols=True)
        readout = LossReadout(self.device)
        stopped_after: int | None = None
        sync_guard = forbid_host_sync(self.device) if config.train.forbid_host_sync else contextlib.nullcontext()
        with tap_layers(model, sorted(tapped)) as feats, sync_guard:
            passes: dict[str, dict[str, Tensor]] = {}

            def forward(inputs: Tensor, pass_name: str) -> Tensor:
                logits = model(inputs)
                passes[pass_name] = dict(feats)
                return logits

            for batch, (x, y) in enumerate(self.train_loader):
                if batch < start_batch:
                    continue  # done before the preemption; the loader still draws it to keep its stream in step
                if self.mask is not None:
                    self.mask.observe(x, y)
                passes.clear()
                # The inner attack runs on the bare module in float32: its gradient needs the precision.
                x_adv = method.perturb(self.model, x, y, generator=attack_generator)
                with autocast:
                    out = method.loss(forward, x, y, x_adv)
                loss = out.loss
                pass_names = list(passes) if config.ib.passes == "both" else [method.train_pass]
                x_ib = self.regularizer.select_x(x, x_adv) if self.regularizer else x
                if ib_on:
                    for name in pass_names:
                        terms = self.regularizer(x_ib, y, passes[name])
                        loss = loss + terms.loss
                        stats.add("ib_penalty", terms.loss)
                        for layer in terms.hsic_x:
                            stats.add(f"hsic_x/{layer}", terms.hsic_x[layer], 1 / len(pass_names))
                            stats.add(f"hsic_y/{layer}", terms.hsic_y[layer], 1 / len(pass_names))
                if plane_every and self.iteration % plane_every == 0:
                    with torch.no_grad():
                        plane = self.plane_regularizer(x, y, passes[method.train_pass])
                    plane_rows.append({"iteration": self.iteration, "epoch": epoch,
                                       "hsic_x": plane.hsic_x, "hsic_y": plane.hsic_y})
                bad_batch = torch.where((bad_batch < 0) & ~torch.isfinite(loss.detach()),
                                        torch.full_like(bad_batch, batch), bad_batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # The gradient norm, on the device (max_norm=inf clips nothing): spikes are reported per epoch.
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
                stats.add("grad_norm", grad_norm)
                stats.peak("grad_norm_max", grad_norm)
                self.optimizer.step()
                stats.add("loss", loss)
                for part, value in out.parts.items():
                    stats.add(f"loss_{part}", value)
                stats.add("train_acc", (out.logits.detach().argmax(1) == y).float().mean())
                stats.count += 1
                self.iteration += 1
                bar.update(1)
                if not self.quiet and batch % 20 == 0:
                    shown = readout.latest()
                    readout.push(loss)
                    if shown is not None:
                        bar.set_postfix(loss=f"{shown:.3f}")
                if self._should_stop(batch):
                    stopped_after = batch + 1
                    break
        bar.close()
        if stopped_after is not None:
            self._save_preempted(epoch, stopped_after, attack_generator, stats, bad_batch, plane_rows)
            return {}
        self.batch_in_epoch, self._partial = 0, None
        if self.dist.enabled:
            bad_batch = all_reduce_sum(bad_batch.clamp_min(-1) + 1) - 1  # any rank's bad batch stops all
        bad = int(bad_batch)
        if bad >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN/Inf at epoch {epoch + 1}, batch {bad}; stopped, and the last "
                f"good checkpoint ({self.run_dir / LATEST}) is kept. Lower optim.lr or the IB weights")
        for value in stats.sums.values():
            all_reduce_mean(value)
        for value in stats.peaks.values():
            all_reduce_mean(value)
        means = stats.means()
        for key, value in means.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{key} became NaN/Inf at epoch {epoch + 1}; the last good checkpoint "
                                         f"({self.run_dir / LATEST}) is kept")
        self._write_plane(plane_rows)
        return means

    def _write_plane(self, plane_rows: list[dict[str, Any]]) -> None:
        rows = [{"iteration": r["iteration"], "epoch": r["epoch"],
                 "hsic_x": {k: float(v) for k, v in r["hsic_x"].items()},
                 "hsic_y": {k: float(v) for k, v in r["hsic_y"].items()}} for r in plane_rows]
        if self.dist.is_main:
            append_jsonl(self.run_dir / INFO_PLANE_FILE, rows)

    def _should_stop(self, batch: int) -> bool:
        """A signal arrived; under DDP every rank must agree, checked every 10 batches (same batch on all)."""
        if not self.dist.enabled:
            return self._stop_signal is not None
        if batch % 10 != 9:
            return False
        return any_rank(self._stop_signal is not None)

    def _save_preempted(self, epoch: int, done: int, attack_generator: torch.Generator, stats: EpochStats,
                        bad_batch: Tensor, plane_rows: list[dict[str, Any]]) -> None:
        """SIGTERM/SIGINT: checkpoint mid-epoch (batches done, random streams, running sums) before exiting."""
        if int(all_reduce_sum(bad_batch.clamp_min(-1) + 1)) > 0:  # a NaN in this epoch: keep the last good one
            raise NonFiniteLossError(f"the training loss became NaN/Inf in epoch {epoch + 1} before the stop "
                                     f"signal; the last good checkpoint ({self.run_dir / LATEST}) is kept")
        self.batch_in_epoch = done
        self._partial = {"attack_rng": attack_generator.get_state(), "rng_cpu": torch.get_rng_state(),
                         "stats": {k: v.detach().clone() for k, v in stats.sums.items()}, "count": stats.count,
                         "epoch": epoch}
        self._write_plane(plane_rows)
        self.save_checkpoint()

    # -- monitoring --
    def monitor(self) -> dict[str, float]:
        """Clean and PGD accuracy on the fixed test subset (the per-epoch robustness signal)."""
        if self.monitor_loader is None:
            return {}
        from ibrar.attacks import PGD

        cfg = self.config
        steps = cfg.train.eval_pgd_steps
        pgd = PGD(self.model, eps=cfg.eval.eps, alpha=cfg.eval.eps / 4, steps=steps, seed=cfg.seed + self.dist.rank) \
            if steps else None
        correct = torch.zeros((), device=self.device)
        robust = torch.zeros((), device=self.device)
        self.model.eval()
        for x, y in self.monitor_loader:
            with torch.no_grad():
                correct += (self.model(x).argmax(1) == y).sum()
            if pgd is not None:
                x_adv = pgd(x, y)
                with torch.no_grad():
                    robust += (self.model(x_adv).argmax(1) == y).sum()
        self.model.train()
        counts = torch.stack([correct, robust, torch.tensor(float(self.monitor_loader.num_examples),
                                                            device=self.device)])
        correct, robust, n = all_reduce_sum(counts).tolist()
        out = {"test_clean_acc": correct / n}
        if pgd is not None:
            out[f"test_pgd{steps}_acc"] = robust / n
        return out

    # -- the whole run --
    def _report_spikes(self, means: dict[str, Any], previous: dict[str, Any]) -> None:
        """Log (not stop) a gradient-norm spike within the epoch or a loss jump from the last epoch."""
        epoch = self.epoch + 1
        notes = []
        if means.get("grad_norm_max", 0.0) > SPIKE_FACTOR * max(means.get("grad_norm", 0.0), 1e-12):
            notes.append(f"gradient-norm spike in epoch {epoch}: max {means['grad_norm_max']:.3g} vs mean "
                         f"{means['grad_norm']:.3g}")
        if previous.get("loss") is not None and abs(means.get("loss", 0.0)) > SPIKE_FACTOR * max(
                abs(previous["loss"]), 1e-12):
            notes.append(f"loss spike in epoch {epoch}: {means['loss']:.4g} after {previous['loss']:.4g}")
        for note in notes:
            means.setdefault("warnings", []).append(note)
            if self.dist.is_main:
                tqdm.write(f"warning: {note}")

    def _tensorboard(self) -> Any:
        """A SummaryWriter on `run_dir/tensorboard` when asked for and installed (rank 0 only)."""
        if not (self.config.train.tensorboard and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            tqdm.write("train.tensorboard: tensorboard is not installed (pip install 'ibrar[tensorboard]'); "
                       "metrics go to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _reset_logs(self, resumed: bool) -> None:
        """Logs end where the checkpoint ends: lines of an epoch that did not finish are dropped."""
        if resumed:
            truncate_jsonl(self.run_dir / METRICS_FILE, lambda r: r.get("epoch", 0) <= self.epoch)
            truncate_jsonl(self.run_dir / INFO_PLANE_FILE, lambda r: r.get("iteration", 0) < self.iteration)
        else:
            for name in (METRICS_FILE, INFO_PLANE_FILE):
                (self.run_dir / name).unlink(missing_ok=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def fit(self) -> dict[str, Any]:
        cfg = self.config
        resumed = self.load_checkpoint()
        if self.dist.is_main:
            self._reset_logs(resumed)
        writer = self._tensorboard()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, self._on_signal)
        last: dict[str, Any] = {}
        try:
            while self.epoch < cfg.train.epochs:
                start = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                means = self.train_epoch(self.epoch)
                if self._partial is not None:  # the epoch was preempted and checkpointed mid-way
                    raise KeyboardInterrupt(f"stopped by signal {self._stop_signal} after a checkpoint at epoch "
                                            f"{self.epoch + 1}, batch {self.batch_in_epoch}; resume with "
                                            f"`ibrar train --resume {self.run_dir}`")
                self._report_spikes(means, last)
                self.scheduler.step()
                broadcast_buffers(self.model)
                self.epoch += 1
                line = {"epoch": self.epoch, "lr": lr, **means, **self.monitor(),
                        "seconds": round(time.perf_counter() - start, 3)}
                if self.dist.is_main:
                    append_jsonl(self.run_dir / METRICS_FILE, [line])
                if writer is not None:
                    for key, value in line.items():
                        if key != "epoch" and isinstance(value, (int, float)):
                            writer.add_scalar(key, value, self.epoch)
                self.save_checkpoint()
                last = line
                if not self.quiet:
                    shown = {k: round(v, 4) for k, v in line.items()
                             if k in ("loss", "train_acc", "test_clean_acc") or k.startswith("test_pgd")}
                    tqdm.write(f"epoch {self.epoch}/{cfg.train.epochs} {shown} ({line['seconds']:.0f}s)")
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if writer is not None:
                writer.close()
        self.finish()
        return last

    def finish(self) -> None:
        """Final mask fit on training data (paper rule), then the final weights."""
        cfg = self.config
        if self.mask is not None and cfg.mask.rule == "paper" and cfg.mask.final_fit:
            loader = BatchLoader(self.train_data, cfg.data.batch_size, shuffle=True, augment=False,
                                 seed=cfg.seed, device=self.device, subset=cfg.data.train_subset)
            loader.set_epoch(0)
            batches = (b for i, b in zip(range(cfg.mask.final_fit_batches), loader, strict=False))
            self.mask.fit(self.model, batches)
        final = {
            "model": unwrap(self.model).state_dict(),
            "mask": self.mask.state_dict() if self.mask is not None else None,
            "config": cfg.model_dump(mode="json"),
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "classes": list(self.train_data.classes),
        }
        if self.dist.is_main:
            save_atomic(final, self.run_dir / FINAL)
        barrier()


def train(config: RunConfig, run_dir: str | Path, data_root: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, quiet: bool = False) -> Trainer:
    """Train one run into `run_dir` (resuming it when asked) and return the finished trainer."""
    run_dir = Path(run_dir)
    check_model_config(config)
    if int(os.environ.get("RANK", "0")) == 0:
        check_run_dir(run_dir, resume, overwrite)
    # Data and model are built before the folder is touched: a failed start leaves an old run intact.
    trainer = Trainer(config, run_dir, data_root=data_root, quiet=quiet)
    if trainer.dist.is_main:
        create_run_dir(run_dir, config, resume)
    barrier()
    if trainer.dist.is_main:
        meta = run_metadata(config.seed, trainer.device)
        meta.update({"world_size": trainer.dist.world_size, "per_rank_batch_size": config.data.batch_size,
                     "global_batch_size": config.data.batch_size * trainer.dist.world_size})
        (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    trainer.fit()
    return trainer


