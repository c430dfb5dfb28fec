"""docs/profiles.md's table comes from the profile's code: each row is a setting `profile=official` changes for
some method, with the values a resolved config really gets."""

from __future__ import annotations

import ibrar.config
from ibrar.report.profiles import SAME, profile_differences, profile_table


def rows(table: str) -> dict[str, list[str]]:
    found = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            found[cells[0].strip("`")] = cells[1:]
    return found


def test_the_table_gives_each_methods_official_values_beside_the_papers():
    table = rows(profile_table())
    assert table["method.eps"] == ["8/255", "0.03", "0.03", "0.03", "0.03", "0.03"]
    # columns: paper, CE, VIB, PGD-AT, TRADES, MART
    assert table["optim.momentum"] == ["0", "0.9", "0.9", SAME, SAME, SAME]
    assert table["optim.schedule"] == ["step", SAME, SAME, SAME, SAME, "none"]
    assert table["ib.passes"] == ["train", SAME, SAME, SAME, "both", "both"]
    assert table["train.post_step_forward"] == ["False"] + ["True"] * 5
    assert "profile" not in table and "seed" not in table  # only what the profile changes


def test_a_setting_the_profile_starts_to_change_gets_its_row(monkeypatch):
    """So the doc cannot lag behind `official_profile`: the table is recomputed from it."""
    plain = ibrar.config.official_profile

    def with_longer_training(data, eps=None):
        preset = plain(data, eps)
        preset.setdefault("train", {})["epochs"] = 61
        return preset

    monkeypatch.setattr(ibrar.config, "official_profile", with_longer_training)
    assert all(changed["train.epochs"][1] == 61 for changed in profile_differences().values())
    assert rows(profile_table())["train.epochs"][1:] == ["61"] * 5
