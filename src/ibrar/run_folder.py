"""The run folder as one object: `RunFolder` knows every file a run writes and is the only code that reads or
writes them (the checkpoint format itself is `ibrar.checkpoint`'s, the lock `ibrar.folder_lock`'s).

A run folder holds `config.yaml` (the resolved config), `meta.json` (versions, hardware, seed; each resumption
appended), `metrics.jsonl` (a line per epoch), `info_plane.jsonl`, `checkpoint.pt` and `final.pt` (each with a
sha256 sidecar), `eval.json` (`ibrar.evaluation_record.Evaluation`; each one a later evaluation replaced is kept in
`eval-history/`), and while an evaluation runs the reference AutoAttack's resumable state. The module imports only
the standard library (pydantic when a config or an evaluation is read): the GPU kit's fetch call, which installs
nothing, uses it too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibrar.errors import IbrarError, InputError
from ibrar.folder_lock import LOCK_FILE, locked_folder
from ibrar.jsonl import append_jsonl, read_jsonl, truncate_jsonl
from ibrar.run_files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CONFUSION_FILE,
    EVAL_FILE,
    EVAL_HISTORY_DIR,
    FEATURES_FILE,
    FINAL_FILE,
    GPU_CALLS_FILE,
    INFO_PLANE_FILE,
    META_FILE,
    METRICS_FILE,
    PARTIAL_EVAL_FILE,
)

if TYPE_CHECKING:
    from ibrar.config import RunConfig
    from ibrar.evaluation_record import Evaluation


class RunFolderError(IbrarError, ValueError):
    """The output folder cannot be used as asked (another run is there, or nothing to resume)."""


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. Paths are properties; readers return None (or empty) for what the run has not written
    yet, except the `require_*` ones, which say what to run first."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ---- the files -------------------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def meta_file(self) -> Path:
        return self.path / META_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def info_plane_file(self) -> Path:
        return self.path / INFO_PLANE_FILE

    @property
    def eval_file(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def partial_eval_file(self) -> Path:
        return self.path / PARTIAL_EVAL_FILE

    @property
    def gpu_calls_file(self) -> Path:
        return self.path / GPU_CALLS_FILE

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def final_file(self) -> Path:
        return self.path / FINAL_FILE

    @property
    def features_file(self) -> Path:
        return self.path / FEATURES_FILE

    @property
    def confusion_file(self) -> Path:
        return self.path / CONFUSION_FILE

    @property
    def name(self) -> str:
        return self.path.name

    def state(self) -> str:
        """'done' (final.pt and eval.json), 'evaluate' (final.pt only), 'resume' (config.yaml), or 'new'."""
        if self.final_file.is_file():
            return "done" if self.eval_file.is_file() else "evaluate"
        return "resume" if self.config_file.is_file() else "new"

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's write lock for the block (one writer per folder: a training or an evaluation); a
        second writer gets `FolderBusyError` naming the holder's pid."""
        with locked_folder(self.path):
            yield self

    # ---- starting a run ----------------------------------------------------------------------------------------

    def check_for_training(self, resume: bool, overwrite: bool) -> None:
        """Refuse to mix two runs in one folder (before any work: nothing is touched here)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"output folder {self.path} is a file, not a folder; choose another with --out")
        if resume:
            if not self.config_file.is_file():
                raise RunFolderError(f"--resume {self.path}: no {CONFIG_FILE} there, so there is no run to resume")
            return
        held = self.path.exists() and any(p.name != LOCK_FILE for p in self.path.iterdir())
        if held and not self.config_file.is_file():  # --overwrite clears the folder: only ever a run's own
            raise RunFolderError(f"output folder {self.path} already holds files but no run (no {CONFIG_FILE}), "
                                 "so it is left alone, with --overwrite too; choose another folder with --out")
        if held and not overwrite:
            raise RunFolderError(f"output folder {self.path} already holds another run's config; pass --resume "
                                 f"{self.path} to continue it, --overwrite to replace it, or --out to choose another "
                                 "folder")

    def start(self, config: RunConfig, resume: bool) -> None:
        """Clear the folder of a replaced run (only once the new one has started) and write the config.

        On resume the config is written again, so overrides given with --resume hold for later resumes too.
        The folder's write lock (`ibrar.folder_lock`) stays: this process holds it.
        """
        from ibrar.config import dump_config

        if not resume and self.path.exists():
            for entry in self.path.iterdir():
                if entry.name == LOCK_FILE:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        _write_whole(self.config_file, dump_config(config))

    # ---- config and metadata -----------------------------------------------------------------------------------

    def config(self, overrides: list[str] | None = None) -> RunConfig:
        """The run's resolved config (with `overrides` applied), validated."""
        from ibrar.config import build_config

        return build_config(self.config_dict(), overrides, resolved=True)

    def config_dict(self) -> dict[str, Any]:
        """config.yaml as written, unvalidated: for readers of committed runs that need only a few fields."""
        import yaml

        if not self.config_file.is_file():
            raise RunFolderError(f"{self.path}: no {CONFIG_FILE}; is it a run folder written by `ibrar train`?")
        try:
            data = yaml.safe_load(self.config_file.read_text()) or {}
        except yaml.YAMLError as err:
            raise RunFolderError(f"{self.config_file} is damaged ({str(err).splitlines()[0]}); restore it (the "
                                 "checkpoint holds the config it trained with: `config` in checkpoint.pt)") from None
        if not isinstance(data, dict):
            raise RunFolderError(f"{self.config_file} holds a {type(data).__name__}, not a config mapping; restore it")
        return data

    def meta(self) -> dict[str, Any]:
        """meta.json ({} before the first start)."""
        return _read_json(self.meta_file)

    def write_meta(self, leg: dict[str, Any], resume: bool) -> None:
        """A new run's metadata, or on resume the first start's with this leg appended under "resumed": a run
        trained across sessions keeps where each part ran."""
        meta = leg
        if resume:
            try:
                meta = json.loads(self.meta_file.read_text())
                meta.setdefault("resumed", []).append(leg)
            except (OSError, ValueError):
                meta = leg  # no readable record of the first start: this leg is the only one known
        _write_whole(self.meta_file, json.dumps(meta, indent=2))

    def recorded_data_root(self) -> Path | None:
        """The data root the run's latest start read its data from (meta.json), if it is still there: `ibrar
        train --resume` and `ibrar eval` of the run find the data without --data-root being given again."""
        try:
            meta = self.meta()
        except RunFolderError:  # a damaged record: the root is then given again, as before it was recorded
            return None
        for leg in reversed(training_legs(meta)):
            if isinstance(leg, dict) and leg.get("data_root"):
                root = Path(leg["data_root"])
                return root if root.is_dir() else None
        return None

    def gpu_calls(self) -> dict[str, Any]:
        """The GPU kit's record of the calls a run trained over ({} when it has none)."""
        return _read_json(self.gpu_calls_file)

    def write_gpu_calls(self, record: dict[str, Any]) -> None:
        _write_whole(self.gpu_calls_file, json.dumps(record, indent=2) + "\n")

    # ---- the training logs -------------------------------------------------------------------------------------

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch lines of metrics.jsonl (a line cut by a kill is skipped)."""
        return read_jsonl(self.metrics_file)

    def info_plane(self) -> list[dict[str, Any]]:
        return read_jsonl(self.info_plane_file)

    def append_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        append_jsonl(self.metrics_file, list(rows))

    def append_info_plane(self, rows: Iterable[dict[str, Any]]) -> None:
        append_jsonl(self.info_plane_file, list(rows))

    def keep_logs(self, metric: Callable[[dict[str, Any]], bool], info_plane: Callable[[dict[str, Any]], bool]
                  ) -> None:
        """Keep the log lines a resumed run's checkpoint covers (those for which the predicates hold)."""
        truncate_jsonl(self.metrics_file, metric)
        truncate_jsonl(self.info_plane_file, info_plane)

    def clear_logs(self) -> None:
        for file in (self.metrics_file, self.info_plane_file):
            file.unlink(missing_ok=True)

    # ---- the evaluation ----------------------------------------------------------------------------------------

    def has_evaluation(self) -> bool:
        return self.eval_file.is_file()

    def evaluation(self) -> Evaluation | None:
        """eval.json, or None when the run has not been evaluated."""
        return _read_evaluation(self.eval_file) if self.eval_file.is_file() else None

    def require_evaluation(self) -> Evaluation:
        if not self.eval_file.is_file():
            raise InputError(f"{self.path} has no {EVAL_FILE}; evaluate it first: ibrar eval {self.path}")
        return _read_evaluation(self.eval_file)

    def partial_evaluation(self) -> Evaluation | None:
        """The GPU kit's whole-test-set piece (AutoAttack's subset not merged yet), or None."""
        return _read_evaluation(self.partial_eval_file) if self.partial_eval_file.is_file() else None

    def write_evaluation(self, evaluation: Evaluation) -> None:
        _write_whole(self.eval_file, evaluation.to_json())

    def keep_earlier_evaluation(self) -> Path | None:
        """Move eval.json into eval-history/, named by when that evaluation started, before a new one replaces
        it (a second `ibrar eval` with other attacks or examples must not lose the first); its new path, or None
        when there was none."""
        if not self.eval_file.is_file():
            return None
        try:
            started = str(json.loads(self.eval_file.read_text()).get("meta", {}).get("started") or "")
        except (ValueError, AttributeError):  # a damaged file is kept too, named by its time on disk
            started = ""
        if not started:
            from datetime import datetime, timezone

            mtime = self.eval_file.stat().st_mtime
            started = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
        history = self.path / EVAL_HISTORY_DIR
        history.mkdir(exist_ok=True)
        stem = "eval-" + started.replace(":", "-").replace("+00-00", "Z")
        kept, k = history / f"{stem}.json", 1
        while kept.exists():
            k += 1
            kept = history / f"{stem}-{k}.json"
        self.eval_file.replace(kept)
        return kept


def _write_whole(path: Path, text: str) -> None:
    """Write a file whole: to a temporary file renamed into place, so that a kill mid-write leaves the old file
    and a reader never sees half of one (the logs are appended to instead; a cut last line is skipped)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _read_evaluation(path: Path) -> Evaluation:
    from ibrar.evaluation_record import Evaluation

    return Evaluation.read(path)


def training_legs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's first start and each resumption (`ibrar train --resume` appends them to meta.json)."""
    return [meta, *meta.get("resumed", [])]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise RunFolderError(f"{path} is not valid JSON ({err}); it was damaged after the run wrote it") from None
