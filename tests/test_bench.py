"""The benchmark of the real training step runs end to end (its figures are measured in bench/, not here)."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_fast_path  # noqa: E402


def test_fast_path_bench_times_both_methods_and_finds_no_host_sync(tmp_path, capsys):
    result = bench_fast_path.main(["--device", "cpu", "--width", "0.0625", "--batch", "8", "--batches", "2",
                                   "--rounds", "1", "--data-root", str(tmp_path / "absent")])
    assert set(result) == {"ib_overhead/fp32", "speedup/fp32", "sync_free", "step_ms/fp32/PGD-AT",
                           "step_ms/fp32/PGD-AT + IB-RAR"}
    assert result["step_ms/fp32/PGD-AT + IB-RAR"] > 0
    assert math.isfinite(result["ib_overhead/fp32"]) and result["speedup/fp32"] == 1.0
    assert result["sync_free"] == 1.0
    assert "host-device synchronisation inside the step" in capsys.readouterr().out


def test_fast_path_bench_reports_a_host_sync_in_the_step(tmp_path, capsys, monkeypatch):
    from ibrar.methods.pgd_at import PGDAT

    original = PGDAT.loss

    def loss_with_a_read(self, forward, x, y, x_adv):
        out = original(self, forward, x, y, x_adv)
        out.loss.item()
        return out

    monkeypatch.setattr(PGDAT, "loss", loss_with_a_read)
    result = bench_fast_path.main(["--device", "cpu", "--width", "0.0625", "--batch", "8", "--batches", "1",
                                   "--rounds", "1", "--data-root", str(tmp_path / "absent")])
    assert result["sync_free"] == 0.0
    assert "FOUND: host-device synchronisation: Tensor.item" in capsys.readouterr().out


def test_eval_bench_reports_per_example_agreement_with_torchattacks_on_a_tiny_model(capsys):
    import pytest

    pytest.importorskip("torchattacks")
    import bench_eval

    result = bench_eval.main(["--model", "tiny", "--n", "12", "--cw-steps", "2", "--batch-size", "6"])
    assert set(result) == {f"agreement/{a}" for a in ("fgsm", "pgd10", "cw2", "fab", "nifgsm")}
    assert all(0 <= v <= 1 for v in result.values())
    assert result["agreement/fgsm"] == 1.0  # the same tensor on both sides (tests/test_attacks_vs_torchattacks.py)
    assert "per-example agreement" in capsys.readouterr().out
