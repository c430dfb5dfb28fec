"""The training loop: one run folder per run, resumable, with the IB-RAR penalty and mask around any method.

The trainer orchestrates: it builds the run from its config, feeds batches to `ibrar.step.TrainStep` (one
step of Algorithm 1, through `ibrar.graph_step.GraphStep`: CUDA graphs on CUDA), keeps the epoch's random
streams, sums and checkpoints, and reacts to signals.
A run folder holds `config.yaml` (resolved), `meta.json` (versions, hardware, seed), `metrics.jsonl` (one line
per epoch), `info_plane.jsonl` (HSIC(X, T_l), HSIC(Y, T_l) every K iterations), `checkpoint.pt` (latest,
written atomically every `train.checkpoint_every` epochs and after the last, or mid-epoch on SIGTERM/SIGINT)
and `final.pt` (weights and mask). Every epoch is a pure function of (weights, seed, epoch), so a run resumed
from whichever checkpoint exists ends bit-identical on the CPU (the logs are cut back to that checkpoint).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator, Mapping
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
from ibrar.checkpoint import restore_training_state, save_atomic, training_state
from ibrar.config import RESUMABLE_KEYS, ConfigError, RunConfig, resume_conflicts
from ibrar.data import BatchLoader, ResidentLoader, resolve_data_root
from ibrar.data.loader import derived_seed
from ibrar.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_buffers,
    init_from_env,
    launched_as_main,
)
from ibrar.errors import IbrarError
from ibrar.graph_step import GraphCache, GraphStep, capture_plan
from ibrar.host_sync import forbid_host_sync
from ibrar.metrics import (
    EpochStats,
    LossReadout,
    plane_rows,
    progress_line,
    spike_notes,
    tensorboard_writer,
)
from ibrar.monitor import Monitor
from ibrar.reproducibility import run_metadata
from ibrar.run_folder import RunFolder
from ibrar.step import TrainStep
from ibrar.taps import tap_layers, unwrap


class NonFiniteLossError(IbrarError, RuntimeError):
    """The loss or an HSIC term became NaN/Inf; the last good checkpoint is kept."""


def compile_for_taps(module: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """torch.compile(module) such that the forward hooks of `ibrar.tap_layers` run in the compiled graph.

    By default Dynamo does not guard on module hooks, so a graph traced for another model of the same class
    (one without taps, say) is reused for this one and fills no taps. Guarding on hooks, from a clean cache
    (graphs traced without those guards are dropped; other compiled models just retrace), prevents that.
    """
    torch._dynamo.reset()
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    return torch.compile(module, **compile_kwargs)


class Trainer:
    """Owns the state of one run (model, mask, optimizer, schedule, data, the folder it writes) and runs its
    epochs around `TrainStep`."""

    def __init__(self, config: RunConfig, run_dir: Path, data_root: str | Path | None = None,
                 quiet: bool = False, stop_at: float | None = None) -> None:
        self.config = config
        self.stop_at = stop_at  # a time.time() deadline: stop at the first batch end after it, as on SIGTERM
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.device = resolve_device(config.device)
        self.dist = init_from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.quiet = quiet or not self.dist.is_main
        if config.train.threads is not None:  # the sums' order, hence the last bits, follow the thread count
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.seed)
        self.train_data, self.test_data = load_data(config, data_root)
        self.num_classes = self.train_data.num_classes
        self.input_size = int(self.train_data.images.shape[-1])
        self.bundle = build_model(config, self.num_classes, self.input_size)
        self.model = self.bundle.model.to(self.device)
        if config.train.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
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
            self.train_model = compile_for_taps(self.train_model)
        fast_path = [k for k in ("amp", "channels_last", "compile") if getattr(config.train, k)]
        if fast_path and self.device.type != "cuda":
            self._log(f"note: {', '.join('train.' + k for k in fast_path)} belong to the CUDA fast path and are "
                      f"off on the {self.device.type}")
        # The step as CUDA graphs (ibrar.graph_step) where the configuration allows it; a note where it does not.
        self.capture_graphs, note = capture_plan(config.train.cuda_graph, self.device, self.dist.enabled,
                                                 config.train.compile and self.device.type == "cuda",
                                                 config.ib.enabled and config.ib.bandwidth == "median")
        if note:
            self._log(f"note: {note}")
        self.graph_cache = GraphCache()  # the step's graphs, kept from epoch to epoch
        resident = config.data.resident if config.data.resident is not None else self.device.type == "cuda"
        # An epoch's last batch of one example cannot train (BatchNorm needs two): that example sits the epoch out
        # (the order is reshuffled each epoch, so a different one each time).
        examples = config.data.train_subset or len(self.train_data)
        lone = examples % config.data.batch_size == 1
        if lone and not self.dist.enabled:
            self._log(f"note: {examples} training images in batches of {config.data.batch_size} leave one in a "
                      f"last batch of its own; it is left out of each epoch")
        self.train_loader = (ResidentLoader if resident else BatchLoader)(
            self.train_data, config.data.batch_size, shuffle=True, augment=config.data.augment, seed=config.seed,
            device=self.device, drop_last=lone, subset=config.data.train_subset, rank=self.dist.rank,
            world_size=self.dist.world_size)
        if self.mask is not None:  # the official rule refreshes by the batch's index in its epoch
            self.mask.epoch_batches = len(self.train_loader)
        self.monitor = Monitor(self.test_data, config.train.eval_subset, config.eval.eps,
                               config.train.eval_pgd_steps, config.eval.batch_size, config.seed, self.device,
                               self.dist.rank, self.dist.world_size, chunk=config.train.monitor_batch_size)
        self.epoch = 0
        self.iteration = 0
        self.batch_in_epoch = 0  # > 0 only in a checkpoint written by a preempted (signalled) run
        self._partial: dict[str, Any] | None = None  # that checkpoint's mid-epoch state
        self._stop_signal: int | None = None

    # -- checkpoints --
    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            counters = {"epoch": self.epoch, "iteration": self.iteration, "batch_in_epoch": self.batch_in_epoch,
                        "partial": self._partial}
            save_atomic(training_state(unwrap(self.model), self.mask, self.optimizer, self.scheduler, counters,
                                       self.config.model_dump(mode="json")), self.folder.checkpoint_file)
        barrier()

    def _checkpoint_due(self) -> bool:
        """After epoch `self.epoch`: every train.checkpoint_every epochs, and always after the last one."""
        every = self.config.train.checkpoint_every
        return self.epoch >= self.config.train.epochs or (every > 0 and self.epoch % every == 0)

    def load_checkpoint(self) -> bool:
        path = self.folder.checkpoint_file
        if not path.is_file():
            return False
        state = restore_training_state(path, unwrap(self.model), self.mask, self.optimizer, self.scheduler,
                                       self.device)
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.batch_in_epoch = int(state.get("batch_in_epoch") or 0)
        self._partial = state.get("partial")
        return True

    # -- one epoch --
    def _ib_active(self, epoch: int) -> bool:
        ib = self.config.ib
        return self.regularizer is not None and (ib.epochs is None or epoch < ib.epochs)

    def _tapped_layers(self) -> list[str]:
        tapped = set(self.regularizer.layers if self.regularizer else ())
        if self.plane_regularizer is not None:
            tapped |= set(self.plane_regularizer.layers)
        return sorted(tapped)

    def train_step(self, taps: Mapping[str, Tensor]) -> TrainStep:
        """The step of Algorithm 1 on this trainer's pieces, reading the tapped layers from `taps`."""
        return TrainStep(self.train_model, self.model, self.method, self.optimizer, taps, self.regularizer,
                         self.mask, self.config.ib.passes, self._autocast(),
                         post_step_forward=self.config.train.post_step_forward)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of steps; returns the epoch's means ({} when a signal stopped it mid-way)."""
        config = self.config
        self.train_model.train()
        self.train_loader.set_epoch(epoch)
        # Everything random in this epoch derives from (seed, epoch): resuming reproduces it exactly.
        torch.manual_seed(derived_seed(config.seed, epoch, 7))
        stream = (config.seed, epoch, 2) if not self.dist.enabled else (config.seed, epoch, 2, self.dist.rank)
        attack_generator = torch.Generator(device=self.device).manual_seed(derived_seed(*stream))
        stats = EpochStats(self.device)
        start_batch, partial = self.batch_in_epoch, self._partial
        if partial is not None:  # resuming a preempted epoch: continue its random streams and its sums
            attack_generator.set_state(partial["attack_rng"].cpu())
            torch.set_rng_state(partial["rng_cpu"].cpu())
            if partial.get("rng_cuda") is not None and self.device.type == "cuda":  # VIB's draws, dropout
                torch.cuda.set_rng_state_all([state.cpu() for state in partial["rng_cuda"]])
            stats.sums, stats.count = dict(partial["stats"]), int(partial["count"])
            stats.peaks = dict(partial.get("peaks", {}))  # the epoch's largest gradient norm so far
        plane: list[dict[str, Any]] = []
        plane_every = config.train.info_plane_every
        ib_on = self._ib_active(epoch)
        bad_batch = torch.full((), -1, dtype=torch.long, device=self.device)
        bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch + 1}/{config.train.epochs}",
                   disable=self.quiet, leave=False, dynamic_ncols=True)
        readout = LossReadout(self.device)
        stopped_after: int | None = None
        sync_guard = forbid_host_sync(self.device) if config.train.forbid_host_sync else contextlib.nullcontext()
        with tap_layers(self.train_model, self._tapped_layers()) as taps, sync_guard:
            step = self.train_step(taps)
            step = GraphStep(step, stats, attack_generator, ib_on, capture=self.capture_graphs,
                             cache=self.graph_cache, log=self._log)
            for batch, (x, y) in enumerate(self.train_loader):
                if batch < start_batch:
                    continue  # done before the preemption; the loader still draws it to keep its stream in step
                out = step(x, y)  # one step of Algorithm 1, its numbers added to `stats` on the device
                if plane_every and self.iteration % plane_every == 0:
                    with torch.no_grad():
                        terms = self.plane_regularizer(x, y, out.features[self.method.train_pass])
                    plane.append({"iteration": self.iteration, "epoch": epoch,
                                  "hsic_x": terms.hsic_x, "hsic_y": terms.hsic_y})
                bad_batch = torch.where((bad_batch < 0) & ~torch.isfinite(out.loss.detach()),
                                        torch.full_like(bad_batch, batch), bad_batch)
                self.iteration += 1
                bar.update(1)
                if not self.quiet and batch % 20 == 0:
                    shown = readout.latest()
                    readout.push(out.loss)
                    if shown is not None:
                        bar.set_postfix(loss=f"{shown:.3f}")
                if self._should_stop(batch):
                    stopped_after = batch + 1
                    break
        bar.close()
        if stopped_after is not None:
            self._save_preempted(epoch, stopped_after, step.generator, stats, bad_batch, plane)
            return {}
        self.batch_in_epoch, self._partial = 0, None
        return self._epoch_means(epoch, stats, bad_batch, plane)

    def _autocast(self) -> Any:
        if self.config.train.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _epoch_means(self, epoch: int, stats: EpochStats, bad_batch: Tensor,
                     plane: list[dict[str, Any]]) -> dict[str, Any]:
        """The epoch's means over batches and ranks; NonFiniteLossError when any batch went NaN/Inf."""
        if self.dist.enabled:
            bad_batch = all_reduce_sum(bad_batch.clamp_min(-1) + 1) - 1  # any rank's bad batch stops all
        bad = int(bad_batch)
        if bad >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN/Inf at epoch {epoch + 1}, batch {bad}; stopped, and the last "
                f"good checkpoint ({self.folder.checkpoint_file}) is kept. Lower optim.lr or the IB weights")
        for value in [*stats.sums.values(), *stats.peaks.values()]:
            all_reduce_mean(value)
        means = stats.means()
        for key, value in means.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{key} became NaN/Inf at epoch {epoch + 1}; the last good checkpoint "
                                         f"({self.folder.checkpoint_file}) is kept")
        self._write_plane(plane)
        return means

    def _write_plane(self, plane: list[dict[str, Any]]) -> None:
        rows = plane_rows(plane)
        if self.dist.is_main:
            self.folder.append_info_plane(rows)

    # -- signals --
    def _should_stop(self, batch: int) -> bool:
        """A signal arrived or the deadline passed; under DDP every rank must agree, checked every 10 batches
        (same batch on all)."""
        if self.stop_at is not None and self._stop_signal is None and time.time() >= self.stop_at:
            self._stop_signal = signal.SIGTERM  # the deadline is a SIGTERM the caller scheduled
        if not self.dist.enabled:
            return self._stop_signal is not None
        if batch % 10 != 9:
            return False
        return any_rank(self._stop_signal is not None)

    def _save_preempted(self, epoch: int, done: int, attack_generator: torch.Generator, stats: EpochStats,
                        bad_batch: Tensor, plane: list[dict[str, Any]]) -> None:
        """SIGTERM/SIGINT: checkpoint mid-epoch (batches done, random streams, running sums) before exiting."""
        if int(all_reduce_sum(bad_batch.clamp_min(-1) + 1)) > 0:  # a NaN in this epoch: keep the last good one
            raise NonFiniteLossError(f"the training loss became NaN/Inf in epoch {epoch + 1} before the stop "
                                     f"signal; the last good checkpoint ({self.folder.checkpoint_file}) is kept")
        self.batch_in_epoch = done
        self._partial = {"attack_rng": attack_generator.get_state(), "rng_cpu": torch.get_rng_state(),
                         "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                         "stats": {k: v.detach().clone() for k, v in stats.sums.items()}, "count": stats.count,
                         "peaks": {k: v.detach().clone() for k, v in stats.peaks.items()}, "epoch": epoch}
        self._write_plane(plane)
        self.save_checkpoint()

    def _until_stopped(self, batches: Iterator[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        """`batches`, with the epoch loop's stop check before each (as after the batch before it: for the first,
        batch -1, which under DDP is a check every rank makes); `KeyboardInterrupt` once it says stop."""
        for batch, item in enumerate(batches):
            if self._should_stop(batch - 1):
                raise KeyboardInterrupt(f"stopped by signal {self._stop_signal} before the mask's final fit ended "
                                        f"(epoch {self.epoch} is checkpointed); resume with "
                                        f"`ibrar train --resume {self.run_dir}`")
            yield item

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    # -- the whole run --
    def _reset_logs(self, resumed: bool) -> None:
        """Logs end where the checkpoint ends: lines of an epoch that did not finish are dropped."""
        if resumed:
            self.folder.keep_logs(lambda r: r.get("epoch", 0) <= self.epoch,
                                  lambda r: r.get("iteration", 0) < self.iteration)
        else:
            self.folder.clear_logs()

    def _log(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text)

    def fit(self) -> dict[str, Any]:
        cfg = self.config
        resumed = self.load_checkpoint()
        if self.dist.is_main:
            self._reset_logs(resumed)
        writer = tensorboard_writer(self.run_dir, self._log) if cfg.train.tensorboard and self.dist.is_main \
            else None
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, self._on_signal)
        # the epoch before, for the loss-spike check: after a resume, the last line the checkpoint kept
        last: dict[str, Any] = (self.folder.metrics() or [{}])[-1] if resumed and self.epoch > 0 else {}
        try:
            while self.epoch < cfg.train.epochs:
                start = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                means = self.train_epoch(self.epoch)
                if self._partial is not None:  # the epoch was preempted and checkpointed mid-way
                    raise KeyboardInterrupt(f"stopped by signal {self._stop_signal} after a checkpoint at epoch "
                                            f"{self.epoch + 1}, batch {self.batch_in_epoch}; resume with "
                                            f"`ibrar train --resume {self.run_dir}`")
                for note in spike_notes(self.epoch + 1, means, last):
                    means.setdefault("warnings", []).append(note)
                    self._log(f"warning: {note}")
                self.scheduler.step()
                broadcast_buffers(self.model)
                self.epoch += 1
                line = {"epoch": self.epoch, "lr": lr, **means, **self.monitor(self.model),
                        "seconds": round(time.perf_counter() - start, 3)}
                if self.dist.is_main:
                    self.folder.append_metrics([line])
                if writer is not None:
                    for key, value in line.items():
                        if key != "epoch" and isinstance(value, (int, float)):
                            writer.add_scalar(key, value, self.epoch)
                if self._checkpoint_due():
                    self.save_checkpoint()
                last = line
                self._log(progress_line(line, cfg.train.epochs))  # with --quiet too: a log's line per epoch
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if writer is not None:
                writer.close()
        self.finish()
        return last

    def finish(self) -> None:
        """Final mask fit on training data (paper rule), then the final weights.

        The deadline (`stop_at`) and a signal stop the fit as they stop an epoch, checked before each of its
        batches: the mask is left as the last epoch's checkpoint holds it, no final weights are written, and
        `KeyboardInterrupt` says to resume, which fits the mask again from that checkpoint.
        """
        cfg = self.config
        if self.mask is not None and cfg.mask.rule == "paper" and cfg.mask.final_fit:
            loader = BatchLoader(self.train_data, cfg.data.batch_size, shuffle=True, augment=False,
                                 seed=cfg.seed, device=self.device, subset=cfg.data.train_subset)
            loader.set_epoch(0)
            batches = (b for i, b in zip(range(cfg.mask.final_fit_batches), loader, strict=False))
            self.mask.fit(self.model, self._until_stopped(batches))
        final = {
            "model": unwrap(self.model).state_dict(),
            "mask": self.mask.state_dict() if self.mask is not None else None,
            "config": cfg.model_dump(mode="json"),
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "classes": list(self.train_data.classes),
        }
        if self.dist.is_main:
            save_atomic(final, self.folder.final_file)
        barrier()


def train(config: RunConfig, run_dir: str | Path, data_root: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, quiet: bool = False, stop_at: float | None = None) -> Trainer:
    """Train one run into `run_dir` (resuming it when asked) and return the finished trainer.

    `stop_at` (a `time.time()`) stops training at the first batch end after it exactly as SIGTERM does: a
    mid-epoch checkpoint, then `KeyboardInterrupt`; `train(..., resume=True)` continues bit-identically.
    """
    run_dir = Path(run_dir)
    check_model_config(config)
    is_main = launched_as_main()
    if is_main:
        RunFolder(run_dir).check_for_training(resume, overwrite)
        if resume and (conflicts := resume_conflicts(RunFolder(run_dir).config(), config)):
            raise ConfigError(
                f"--resume {run_dir}: {'; '.join(conflicts)}. The checkpoint was trained with the run's values, "
                f"so a resume keeps them (it may change only {', '.join(RESUMABLE_KEYS)}, train.* and eval.*); "
                f"start a new run (--out DIR, or --overwrite) to train with the new ones")
    # One writer per folder: a second `ibrar train` or `ibrar eval` into it is refused while this one runs.
    with RunFolder(run_dir).locked() if is_main else contextlib.nullcontext():
        return _train_locked(config, run_dir, data_root, resume, quiet, stop_at)


def _train_locked(config: RunConfig, run_dir: Path, data_root: str | Path | None, resume: bool,
                  quiet: bool, stop_at: float | None) -> Trainer:
    # Data and model are built before the folder is touched: a failed start leaves an old run intact.
    trainer = Trainer(config, run_dir, data_root=data_root, quiet=quiet, stop_at=stop_at)
    if trainer.dist.is_main:
        trainer.folder.start(config, resume)
    barrier()
    if trainer.dist.is_main:
        meta = run_metadata(config.seed, trainer.device)
        meta.update({"data_root": str(resolve_data_root(config.data.root or data_root).resolve()),
                     "world_size": trainer.dist.world_size, "per_rank_batch_size": config.data.batch_size,
                     "global_batch_size": config.data.batch_size * trainer.dist.world_size})
        trainer.folder.write_meta(meta, resume)
    trainer.fit()
    return trainer


