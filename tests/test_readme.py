"""The README's library examples ("Use it") run as printed: a user copies them first, so they must not drift
from the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def use_it_examples() -> list[str]:
    """The Python blocks of the README's "Use it" section up to its first subsection (the others need a run
    folder or RobustBench)."""
    text = README.read_text()
    section = text.split("\n## Use it\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_use_it_section_has_its_two_examples():
    blocks = use_it_examples()
    assert len(blocks) == 2 and "ChannelMask" in blocks[0] and "TrainStep" in blocks[1]


@pytest.mark.parametrize("index", [0, 1], ids=["training-loop", "train-step"])
def test_a_use_it_example_runs_as_printed(index, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    namespace: dict[str, object] = {}
    exec(compile(use_it_examples()[index], f"README.md example {index}", "exec"), namespace)
    mask = namespace["mask"]
    assert int(mask.mask.sum()) < mask.mask.numel()  # the final fit dropped channels
    if index == 1:
        printed = capsys.readouterr().out.splitlines()
        assert len(printed) == 2 and all(line.startswith("loss ") for line in printed)
