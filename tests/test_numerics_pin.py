"""Refactoring the trainer must not change what it computes: tiny runs end with pinned weights.

Two pins in `numerics_pin.json`. The summaries (each parameter's norm and every per-epoch metric of the step)
are checked on any machine of the CPU vendor they were recorded on within a tolerance far below what a changed
random stream or a reordered float operation moves them by, and far above what another vector width (AVX2,
AVX512) of that vendor moves them by. The sha256 digests are bit-exact, so they are checked only on a platform
(torch version, CPU capability, vendor) they were recorded on: a run resumed after a refactor ends bit-identical
only if the step consumes random numbers in the same order and does the same float operations. The first digests
were recorded before the training step moved into `ibrar.step` (commit 1d41114, an AVX2 machine); the first
summaries and the AVX512 digests at 595a143, on machines whose vendor was not recorded (they serve any vendor
recorded since). Another vendor's kernels move the summaries further: on an AMD EPYC (AVX512) against those
first summaries, the TRADES run with the official mask (one channel picked by ranking float32 HSIC values, which
a near-tie flips) deviates by 5% already in epoch 1 and MART's epoch-2 KL term by 0.5%, the others by under
1e-5; so each vendor gets its own summaries and digests (AuthenticAMD recorded at 129db3f).

A change meant to change what a run computes renames that run and is re-recorded on the machine at hand: the
official mask on every training forward of a refresh batch, refreshed by the batch's index in its epoch (its
TRADES run, re-recorded on a GenuineIntel AVX512 machine) is checked on the platforms and vendors where it is
recorded, and skipped, by name, on the others until `python tests/test_numerics_pin.py` runs there (it adds the
runs a platform lacks and keeps every pin already recorded). On AuthenticAMD that run has digests only
(`DIGEST_ONLY`): there its epoch-1 training accuracy is 3.7% off the GenuineIntel summary (a near-tie flipped),
so summaries from one vector width could not be trusted to hold on the other.

Another torch release moves the summaries more than another CPU does: its linear algebra differs at about 1e-7,
and the one-step sign attack of the TRADES and MART runs amplifies that over two epochs (torch 2.11 against the
2.14 pins: median relative deviation at most 1e-5 per run, the worst key 2.5e-2, TRADES' epoch-2 KL term). So the
tight tolerance applies on the release the summaries were recorded on, and on any release a run's median
deviation must stay under 1e-3 and its worst under 0.1, which a changed random stream breaks (a changed seed:
median 2-3% in every run, the worst 60-130%).
"""

from __future__ import annotations

import hashlib
import json
import statistics
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
    "trades+both-passes+official-mask-each-forward+x-adversarial": {
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
# Runs pinned on a vendor by their digests alone: their summaries move past the tolerance between machines of it.
DIGEST_ONLY: dict[str, set[str]] = {"AuthenticAMD": {"trades+both-passes+official-mask-each-forward+x-adversarial"}}
# Keys of metrics.jsonl that the training step determines (the monitor's PGD accuracy and times are not).
STEP_KEYS = ("loss", "train_acc", "grad_norm", "grad_norm_max", "ib_penalty", "hsic_x/", "hsic_y/", "loss_",
             "lr", "epoch")


def cpu_vendor() -> str:
    """GenuineIntel, AuthenticAMD, ... (Linux's /proc/cpuinfo; "unknown" elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def platform() -> dict[str, str]:
    return {"torch": torch.__version__.split("+")[0], "cpu": torch.backends.cpu.get_cpu_capability(),
            "vendor": cpu_vendor()}


def pinned_summaries() -> tuple[str, dict[str, dict[str, float]]]:
    """The torch release and the summaries recorded on this CPU vendor, else the first ones (vendor unrecorded)."""
    record = json.loads(PIN_FILE.read_text())
    own = record.get("summaries_by_vendor", {}).get(cpu_vendor())
    return (own["torch"], own["summaries"]) if own else (record["summaries_torch"], record["summaries"])


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


def run_summary(run_dir: Path) -> dict[str, float]:
    """Each floating parameter's norm (in float64) and every per-epoch value the step determines."""
    final = load_file(run_dir / "final.pt")
    summary = {f"{part}.{key}": float(tensor.double().norm())
               for part in ("model", "mask") for key, tensor in sorted((final[part] or {}).items())
               if tensor.is_floating_point()}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        summary |= {f"epoch{row['epoch']}.{k}": float(v) for k, v in row.items()
                    if k.startswith(STEP_KEYS) and isinstance(v, (int, float))}
    return summary


def train_pinned_runs(tmp: Path) -> dict[str, Path]:
    data = write_image_folder(tmp / "data", per_class_train=12, per_class_test=4, size=32, seed=3)
    torch.set_num_threads(1)
    folders = {}
    for name, sections in RUNS.items():
        config = build_config(tiny_config(data, train={"epochs": 2, "info_plane_every": 2, "eval_pgd_steps": 1},
                                          **sections))
        train(config, tmp / name, quiet=True)
        folders[name] = tmp / name
    return folders


@pytest.fixture(scope="module")
def pinned_runs(tmp_path_factory) -> dict[str, Path]:
    return train_pinned_runs(tmp_path_factory.mktemp("pinned"))


def torch_release() -> str:
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def relative_deviation(measured: float, pinned: float) -> float:
    return abs(measured - pinned) / max(abs(pinned), 1e-6)


def test_the_training_step_computes_what_it_computed_before_on_any_machine(pinned_runs):
    release, summaries = pinned_summaries()
    if torch_release() != release:
        pytest.skip(f"summaries recorded on torch {release}, this is {torch_release()}: "
                    "the test across releases applies")
    for name, folder in pinned_runs.items():
        if name not in summaries:
            continue
        measured = run_summary(folder)
        pinned = summaries[name]
        assert measured.keys() == pinned.keys(), name
        for key, value in pinned.items():
            assert measured[key] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{name}: {key}"
    skip_unrecorded(summarised(pinned_runs), summaries, f"summaries on {cpu_vendor()}")


def summarised(runs: dict[str, Path]) -> dict[str, Path]:
    """The runs this vendor pins by summaries as well as digests."""
    return {name: folder for name, folder in runs.items() if name not in DIGEST_ONLY.get(cpu_vendor(), set())}


def skip_unrecorded(runs: dict[str, Path], recorded: dict[str, object], where: str) -> None:
    """Once every recorded run has been checked: skip, by name, a run with nothing recorded here."""
    assert set(runs) & set(recorded), f"no run of {sorted(runs)} has {where} recorded"
    if missing := sorted(set(runs) - set(recorded)):
        pytest.skip(f"{', '.join(missing)}: no {where} recorded; record it with python tests/test_numerics_pin.py")


def drift_from_pin(measured: dict[str, float], pinned: dict[str, float]) -> tuple[float, float, str]:
    """The median and the worst relative deviation over a run's summary, and the worst key."""
    deviations = {key: relative_deviation(measured[key], value) for key, value in pinned.items()}
    worst = max(deviations, key=deviations.get)
    return statistics.median(deviations.values()), deviations[worst], worst


def test_the_training_step_stays_within_what_another_torch_release_moves(pinned_runs):
    pinned = pinned_summaries()[1]
    for name, folder in pinned_runs.items():
        if name not in pinned:
            continue
        measured = run_summary(folder)
        assert measured.keys() == pinned[name].keys(), name
        median, worst, key = drift_from_pin(measured, pinned[name])
        assert median < 1e-3 and worst < 0.1, f"{name}: median {median:.2g}, worst {worst:.2g} ({key})"
    skip_unrecorded(summarised(pinned_runs), pinned, f"summaries on {cpu_vendor()}")


def test_the_rule_across_releases_sees_a_changed_random_stream(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class_train=12, per_class_test=4, size=32, seed=3)
    config = build_config(tiny_config(data, train={"epochs": 2, "info_plane_every": 2, "eval_pgd_steps": 1},
                                      seed=1, **RUNS["vib"]))
    train(config, tmp_path / "vib", quiet=True)
    median, _, _ = drift_from_pin(run_summary(tmp_path / "vib"), pinned_summaries()[1]["vib"])
    assert median >= 1e-3


def test_the_training_step_is_bit_identical_on_a_recorded_platform(pinned_runs):
    records = json.loads(PIN_FILE.read_text())["digests"]
    here = [r["digests"] for r in records if r["platform"] == platform()]
    unnamed = {key: value for key, value in platform().items() if key != "vendor"}  # the first ones name no vendor
    here = here or [r["digests"] for r in records if r["platform"] == unnamed]
    if not here:
        pytest.skip(f"digests recorded on {[r['platform'] for r in records]}, this is {platform()}")
    recorded = here[0]
    assert {name: run_digest(folder) for name, folder in pinned_runs.items() if name in recorded} == recorded
    skip_unrecorded(pinned_runs, recorded, f"digest on {platform()}")


def test_the_summary_pin_sees_a_learning_rate_changed_by_a_fifth_of_a_percent(tmp_path):
    """The tolerance is tight enough to catch a changed step, not only a changed random stream."""
    import ibrar.train as training

    data = write_image_folder(tmp_path / "data", per_class_train=12, per_class_test=4, size=32, seed=3)
    config = build_config(tiny_config(data, train={"epochs": 2, "info_plane_every": 2, "eval_pgd_steps": 1},
                                      optim={"lr": 0.0501}, **RUNS["vib"]))
    training.train(config, tmp_path / "vib", quiet=True)
    pinned = pinned_summaries()[1]["vib"]
    measured = run_summary(tmp_path / "vib")
    assert any(measured[k] != pytest.approx(v, rel=1e-4, abs=1e-6) for k, v in pinned.items())


def merge_recorded(recorded: dict[str, object], measured: dict[str, object]) -> dict[str, object]:
    """What a re-record writes: every pin kept as recorded, the runs not recorded yet added, retired runs dropped.

    A change meant to change what a run computes renames the run, so it arrives here as a new name; an existing
    pin is never overwritten by a re-record on another machine of the same platform (that would hide a drift
    below the test's tolerance).
    """
    return {name: recorded.get(name, value) for name, value in measured.items()}


def test_a_re_record_keeps_every_pin_adds_the_new_runs_and_drops_the_retired():
    recorded = {"kept": {"loss": 1.0}, "retired": {"loss": 2.0}}
    measured = {"kept": {"loss": 1.0000001}, "new": {"loss": 3.0}}
    assert merge_recorded(recorded, measured) == {"kept": {"loss": 1.0}, "new": {"loss": 3.0}}


if __name__ == "__main__":  # record what this platform lacks: python tests/test_numerics_pin.py
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    record = json.loads(PIN_FILE.read_text()) if PIN_FILE.is_file() else {"digests": []}
    with tempfile.TemporaryDirectory() as tmp:
        runs = train_pinned_runs(Path(tmp))
        summaries = {name: run_summary(folder) for name, folder in summarised(runs).items()}
        by_vendor = record.setdefault("summaries_by_vendor", {})
        own = by_vendor.get(cpu_vendor())
        if own and own["torch"] == torch_release():
            summaries = merge_recorded(own["summaries"], summaries)
        by_vendor[cpu_vendor()] = {"torch": torch_release(), "summaries": summaries}
        record.setdefault("summaries", summaries)  # the first machine's, for vendors not recorded
        record.setdefault("summaries_torch", torch_release())
        digests = {name: run_digest(folder) for name, folder in runs.items()}
    same = [r for r in record["digests"] if r["platform"] == platform()]
    digests = merge_recorded(same[0]["digests"], digests) if same else digests
    record["digests"] = [r for r in record["digests"] if r["platform"] != platform()]
    record["digests"].append({"platform": platform(), "digests": digests})
    PIN_FILE.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
