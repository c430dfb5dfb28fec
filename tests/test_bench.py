"""The benchmark of the real training step runs end to end (its figures are measured in bench/, not here)."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_fast_path  # noqa: E402


def test_fast_path_bench_times_both_methods_and_finds_no_host_sync(tmp_path, capsys):
    result = bench_fast_path.main(["--device", "cpu", "--width", "0.0625", "--batch", "8", "--batches", "2",
                                   "--rounds", "1", "--data-root", str(tmp_path / "absent")])
    assert set(result) == {"ib_overhead/fp32", "speedup/fp32", "sync_free"}
    assert math.isfinite(result["ib_overhead/fp32"]) and result["speedup/fp32"] == 1.0
    assert result["sync_free"] == 1.0
    assert "host-device synchronisation inside the step" in capsys.readouterr().out
