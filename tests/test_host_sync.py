"""The host-sync guard: it catches every kind of host read it claims to, names the caller, and cleans up."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from ibrar.config import build_config
from ibrar.host_sync import HostSyncError, forbid_host_sync, sync_allowed
from ibrar.methods.pgd_at import PGDAT
from ibrar.metrics import LossReadout
from ibrar.train import Trainer, train

READS = {
    "item": lambda t: t.sum().item(),
    "bool": lambda t: bool(t.sum() > 0),
    "int": lambda t: int(t.sum()),
    "float": lambda t: float(t.sum()),
    "tolist": lambda t: t.tolist(),
    "cpu": lambda t: t.cpu(),
    "numpy": lambda t: t.numpy(),
    "nonzero": lambda t: t.nonzero(),
    "torch.nonzero": lambda t: torch.nonzero(t),
    "unique": lambda t: torch.unique(t),
    "boolean mask index": lambda t: t[t > 0],
    "index with a tensor scalar": lambda t: [1, 2, 3][t.argmax()],
}


@pytest.mark.parametrize("read", list(READS.values()), ids=list(READS))
def test_every_host_read_raises_and_names_the_calling_line(read):
    t = torch.tensor([1.0, -2.0, 3.0])
    with pytest.raises(HostSyncError, match=r"test_host_sync\.py:\d+"), forbid_host_sync("cpu"):
        read(t)


def test_device_side_work_passes_untouched():
    t = torch.randn(8, 3)
    with forbid_host_sync("cpu"):
        out = torch.where(t > 0, t, 0).sum(0) + t[torch.arange(4)].mean() + t[:, 1:].abs().amax()
        kept = t * (t > 0)
    assert out.shape == (3,) and kept.shape == t.shape


def test_sync_allowed_lets_a_deliberate_read_through():
    t = torch.tensor([2.0])
    with forbid_host_sync("cpu"):
        with sync_allowed():
            assert t.item() == 2.0
        with pytest.raises(HostSyncError):
            t.item()


def test_the_guard_is_removed_after_the_block_even_after_an_error():
    original = torch.Tensor.item
    with pytest.raises(HostSyncError), forbid_host_sync("cpu"):
        torch.ones(1).item()
    assert torch.Tensor.item is original
    assert torch.ones(1).item() == 1.0 and torch.nonzero(torch.ones(2)).shape == (2, 1)


def test_loss_readout_shows_the_pushed_loss_on_the_cpu():
    readout = LossReadout(torch.device("cpu"))
    assert readout.latest() is None
    with forbid_host_sync("cpu"):
        readout.push(torch.tensor(0.25))
        assert readout.latest() == 0.25


class FakeEvent:
    """Stands in for torch.cuda.Event: `done` says whether the copy recorded before it has landed."""

    def __init__(self) -> None:
        self.done = False
        self.records = 0

    def record(self) -> None:
        self.records += 1

    def query(self) -> bool:
        return self.done


def test_loss_readout_never_waits_for_a_copy_in_flight():
    readout = LossReadout(torch.device("cpu"))
    readout.event = event = FakeEvent()  # the CUDA branch's logic, driven by hand
    readout.push(torch.tensor(1.5))
    assert event.records == 1 and readout.latest() is None  # copy in flight: nothing shown, nothing awaited
    readout.push(torch.tensor(9.0))
    assert event.records == 1  # skipped: the buffer is still being written
    event.done = True
    assert readout.latest() == 1.5
    readout.push(torch.tensor(2.5))
    assert event.records == 2 and readout.latest() == 2.5  # (the fake's copy is synchronous, its event done)


def test_a_training_step_that_reads_the_loss_is_caught(image_folder, tmp_path, monkeypatch):
    original = PGDAT.loss

    def loss_with_a_read(self, forward, x, y, x_adv):
        out = original(self, forward, x, y, x_adv)
        if out.loss.item() > 1e9:  # the kind of check that costs a GPU sync every batch
            raise AssertionError
        return out

    monkeypatch.setattr(PGDAT, "loss", loss_with_a_read)
    config = build_config(tiny_config(image_folder, method={"name": "pgd_at", "steps": 1},
                                      train={"epochs": 1, "forbid_host_sync": True}))
    with pytest.raises(HostSyncError, match=r"Tensor\.item .*test_host_sync\.py:\d+ in loss_with_a_read"):
        train(config, tmp_path / "run", quiet=True)
    monkeypatch.setattr(PGDAT, "loss", original)
    train(config.model_copy(update={"train": config.train.model_copy(update={"forbid_host_sync": False})}),
          tmp_path / "ok", quiet=True)
    assert (tmp_path / "ok" / "final.pt").is_file()


@pytest.mark.parametrize("sections", [
    {"profile": "official", "method": {"name": "pgd_at", "steps": 1}},
    {"method": {"name": "trades", "steps": 1}, "ib": {"enabled": True, "passes": "both"},
     "mask": {"enabled": True, "refresh_every": 1}, "data": {"batch_size": 32, "resident": True}},
], ids=["official-profile", "trades-both-passes-resident-data"])
def test_the_step_has_no_host_read_in_other_settings(sections, image_folder, tmp_path):
    sections = {"data": {"batch_size": 32}} | sections  # the resident case sets its own data section
    config = build_config(tiny_config(image_folder, **sections,
                                      train={"epochs": 1, "info_plane_every": 1, "forbid_host_sync": True}))
    train(config, tmp_path / "run", quiet=False)  # quiet=False: the progress bar's live loss too
    assert (tmp_path / "run" / "final.pt").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_cuda_fast_path_has_no_host_sync(image_folder, tmp_path):
    config = build_config(tiny_config(
        image_folder, device="cuda", model={"name": "vgg16", "width": 0.125}, method={"name": "pgd_at", "steps": 2},
        ib={"enabled": True}, mask={"enabled": True, "refresh_every": 2}, data={"batch_size": 32},
        train={"epochs": 1, "amp": True, "channels_last": True, "compile": True}))
    trainer = Trainer(config, tmp_path, quiet=False)
    trainer.train_epoch(0)  # compiles: compilation is not part of the step
    checked = config.train.model_copy(update={"forbid_host_sync": True})
    trainer.config = config.model_copy(update={"train": checked})
    means = trainer.train_epoch(1)
    assert torch.isfinite(torch.tensor(means["loss"]))
