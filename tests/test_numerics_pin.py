"""Refactoring the trainer must not change what it computes: tiny runs end with pinned weights.

The digests in `numerics_pin.json` were recorded with the trainer as it was before the training step moved
into `ibrar.step` (commit 1d41114). A run started before a refactor and resumed after it, or trained again,
ends bit-identical only if the step consumes random numbers in the same order and does the same float
operations; a change that moves either fails here. Float results depend on the CPU's vector instructions
and the torch version, so the check runs only on the platform the digests were recorded on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, write_image_folder
from ibrar.checkpoint import load_file
from ibrar.config import build_config
from ibrar.train import train

PIN_FILE = Path(__file__).parent / "data" / "numerics_pin.json"

# Every part of the step: the inner attack, the mask (both rules), IB terms on one or both passes, X clean
# or adversarial, the information plane, IB switched off after an epoch.
RUNS: dict[str, dict] = {
    "pgd_at+ibrar+paper-mask": {
        "method": {"name": "pgd_at", "steps": 2},
        "ib": {"enabled": True},
        "mask": {"enabled": True, "refresh_every": 2},
    },
    "trades+both-passes+official-mask+x-adversarial": {
        "method": {"name": "trades", "steps": 1},
        "ib": {"enabled": True, "passes": "both", "label_kernel": "gaussian", "x_source": "adversarial"},
        "mask": {"enabled": True, "rule": "official", "official_count": 1, "refresh_every": 2},
    },
    "mart+ib-first-epoch": {
        "method": {"name": "mart", "steps": 1},
        "ib": {"enabled": True, "layers": "all", "epochs": 1},
    },
    "vib": {"method": {"name": "vib"}},
}
# Keys of metrics.jsonl that the training step determines (the monitor's PGD accuracy and times are not).
STEP_KEYS = ("loss", "train_acc", "grad_norm", "grad_norm_max", "ib_penalty", "hsic_x/", "hsic_y/", "loss_",
             "lr", "epoch")


def platform() -> dict[str, str]:
    return {"torch": torch.__version__.split("+")[0], "cpu": torch.backends.cpu.get_cpu_capability()}


def run_digest(run_dir: Path) -> str:
    """sha256 over the final weights and mask, the step's metrics and the information-plane rows."""
    digest = hashlib.sha256()
    final = load_file(run_dir / "final.pt")
    for part in ("model", "mask"):
        for key, tensor in sorted((final[part] or {}).items()):
            digest.update(f"{part}.{key}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        kept = {k: v for k, v in row.items() if k.startswith(STEP_KEYS)}
        digest.update(json.dumps(kept, sort_keys=True).encode())
    digest.update((run_dir / "info_plane.jsonl").read_bytes())
    return digest.hexdigest()


def train_pinned_runs(tmp: Path) -> dict[str, str]:
    data = write_image_folder(tmp / "data", per_class_train=12, per_class_test=4, size=32, seed=3)
    torch.set_num_threads(1)
    digests = {}
    for name, sections in RUNS.items():
        config = build_config(tiny_config(data, train={"epochs": 2, "info_plane_every": 2, "eval_pgd_steps": 1},
                                          **sections))
        train(config, tmp / name, quiet=True)
        digests[name] = run_digest(tmp / name)
    return digests


def test_the_training_step_computes_what_it_computed_before_the_refactor(tmp_path):
    pinned = json.loads(PIN_FILE.read_text())
    if pinned["platform"] != platform():
        pytest.skip(f"digests recorded on {pinned['platform']}, this is {platform()}")
    assert train_pinned_runs(tmp_path) == pinned["digests"]


if __name__ == "__main__":  # regenerate: python tests/test_numerics_pin.py (only when a change is meant to)
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        record = {"platform": platform(), "digests": train_pinned_runs(Path(tmp))}
    PIN_FILE.parent.mkdir(exist_ok=True)
    PIN_FILE.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
