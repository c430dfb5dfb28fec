"""Two-process DDP training on the CPU (gloo): ranks agree, and match one process with the global batch."""

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ibrar.config import build_config
from ibrar.distributed import any_rank, init_from_env, shutdown
from ibrar.host_sync import forbid_host_sync
from ibrar.train import train

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402


class TinyMLP(nn.Module):
    """No BatchNorm: per-rank batch statistics would make DDP differ from one process by design."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(3 * 32 * 32, 32), nn.ReLU())
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc2(self.fc1(self.flat(x)))


def build_tiny_mlp(num_classes: int) -> nn.Module:
    return TinyMLP(num_classes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    trainer = train(build_config(config), out, quiet=True)
    state = {"model": trainer.model.state_dict()}
    if trainer.mask is not None:
        state["mask"] = trainer.mask.mask.clone()
    torch.save(state, Path(out) / f"rank{rank}.pt")
    shutdown()


def _spawn(config: dict, out: Path, world: int = 2) -> list[dict]:
    mp.spawn(_worker, args=(world, _free_port(), config, str(out)), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.mark.slow
def test_two_ranks_end_identical_and_match_one_process_with_the_global_batch(image_folder, tmp_path):
    common = {"model": {"name": "test_distributed:build_tiny_mlp", "ib_layers": ["fc1"]},
              "data": {"augment": False}, "train": {"epochs": 2, "eval_subset": 16, "eval_pgd_steps": 0,
                                                    "info_plane_every": 0}}
    ddp_config = tiny_config(image_folder, **{**common, "data": {"augment": False, "batch_size": 8}})
    ranks = _spawn(ddp_config, tmp_path / "ddp")
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key

    single_config = tiny_config(image_folder, **{**common, "data": {"augment": False, "batch_size": 16}})
    single = train(build_config(single_config), tmp_path / "single", quiet=True)
    for key, value in single.model.state_dict().items():
        assert torch.allclose(value, ranks[0]["model"][key], atol=1e-5, rtol=1e-4), key
    meta = (tmp_path / "ddp" / "meta.json").read_text()
    assert '"world_size": 2' in meta and '"global_batch_size": 16' in meta


@pytest.mark.slow
def test_ranks_share_one_mask_and_weights_with_ib_and_batchnorm(image_folder, tmp_path):
    config = tiny_config(image_folder, data={"batch_size": 8}, ib={"enabled": True},
                         mask={"enabled": True, "drop_fraction": 0.25, "refresh_every": 2},
                         train={"epochs": 1, "eval_subset": 16, "eval_pgd_steps": 1, "info_plane_every": 0,
                                "forbid_host_sync": True})
    ranks = _spawn(config, tmp_path / "ddp")  # also: the DDP step reads nothing back to the host
    assert torch.equal(ranks[0]["mask"], ranks[1]["mask"])
    assert int((ranks[0]["mask"] == 0).sum()) > 0
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    assert (tmp_path / "ddp" / "final.pt").is_file()


def _vote_worker(rank: int, world: int, port: int, votes: list[bool], out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    init_from_env("cpu")
    with forbid_host_sync("cpu"):  # the stop vote is a host-side collective: allowed inside the step
        result = any_rank(votes[rank])
    Path(out, f"vote{rank}").write_text(str(result))
    shutdown()


@pytest.mark.parametrize("votes", [[False, True], [False, False]], ids=["one-rank-stops", "none-stops"])
def test_a_stop_signal_on_one_rank_stops_every_rank(votes, tmp_path):
    mp.spawn(_vote_worker, args=(2, _free_port(), votes, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"vote{r}").read_text() for r in range(2)] == [str(any(votes))] * 2


def test_torchrun_ibrar_train_evaluates_once_on_rank_0(image_folder, tmp_path):
    """The README's `torchrun -m ibrar train CONFIG`: every rank trains, rank 0 alone evaluates and prints (a
    second rank evaluating found the folder locked and failed the whole job)."""
    import subprocess

    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(image_folder, train={"epochs": 1, "eval_pgd_steps": 0,
                                                                         "info_plane_every": 0},
                                                 eval={"attacks": ["fgsm"], "n": 8})))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master-port={_free_port()}", "-m", "ibrar", "train", str(config), "--out", str(run),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1 and done.stdout.count("worst case") == 1
    assert (run / "eval.json").is_file() and not (run / "eval-history").exists()
