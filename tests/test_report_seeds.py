"""Seeds added beside a seed-0 run without suffix (Table 1's PGD-AT pair gains `-seed1` and `-seed2`, evaluated
with `--seed 1` and `--seed 2`): `ibrar report` shows the row's mean ± std over every seed present."""

from __future__ import annotations

import statistics

import pytest

from ibrar import report
from test_report import TABLE1_PGD_AT, TABLE1_PGD_AT_IBRAR, checkout, fake_run  # noqa: F401 (checkout: a fixture)


@pytest.mark.parametrize("with_trades", [False, True])
def test_table1_rows_take_the_mean_over_the_seeds_beside_the_unsuffixed_run(checkout, with_trades):  # noqa: F811
    """With the TRADES pair collected too, a build of one seed matches more folders; without it, one of three."""
    folder = checkout / "results" / "table1-cpu"
    cleans = {"vgg16-cifar10-pgd_at": (36.1, 37.0, 35.2), "vgg16-cifar10-pgd_at-ibrar": (42.6, 41.0, 43.1)}
    for group, attacks in (("vgg16-cifar10-pgd_at", TABLE1_PGD_AT), ("vgg16-cifar10-pgd_at-ibrar",
                                                                        TABLE1_PGD_AT_IBRAR)):
        for seed, clean in enumerate(cleans[group]):
            fake_run(folder, group if seed == 0 else f"{group}-seed{seed}", clean, attacks,
                     eval_extra={"seed": seed})
    if with_trades:
        fake_run(folder, "vgg16-cifar10-trades", 40.1, TABLE1_PGD_AT)
    text = report.table1_tables(checkout / "results", checkout)
    base, ib = (cleans[g] for g in ("vgg16-cifar10-pgd_at", "vgg16-cifar10-pgd_at-ibrar"))
    assert f"| PGD-AT (ours, cpu) | {statistics.fmean(base):.2f} ± {statistics.stdev(base):.2f} |" in text
    assert f"| PGD-AT + IB-RAR (ours, cpu) | {statistics.fmean(ib):.2f} ± {statistics.stdev(ib):.2f} |" in text
    assert f"| difference | +{statistics.fmean(ib) - statistics.fmean(base):.2f} |" in text
    assert "6 runs in `results/table1-cpu/`" in text
    assert "1,000 test images (seeds 0, 1 and 2, each run its own)" in text
