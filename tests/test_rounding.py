"""Table numbers round as the decimals they stand for: k/n accuracies, their means, float32 noise removed."""

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ibrar.rounding import fixed, signed


def exact(numerator: int, denominator: int, digits: int) -> str:
    value = Decimal(numerator) / Decimal(denominator)
    return str(value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


@given(k=st.integers(0, 10_000), n=st.integers(1, 10_000), digits=st.sampled_from([1, 2]))
def test_a_percentage_of_k_in_n_rounds_as_its_exact_decimal_also_from_a_float32_record(k, n, digits):
    k = min(k, n)
    assert fixed(100 * k / n, digits) == exact(100 * k, n, digits)
    assert fixed(100 * float(np.float32(k / n)), digits) == exact(100 * k, n, digits)


@given(a=st.integers(0, 1000), b=st.integers(0, 1000))
def test_the_mean_of_two_seeds_rounds_at_its_half_away_from_zero(a, b):
    mean = (a / 1000 + b / 1000) / 2 * 100
    assert fixed(mean, 1) == exact(100 * (a + b), 2000, 1)
    assert fixed(2.55, 1) == "2.6" and fixed(3.55, 1) == "3.6" and fixed(2.95, 1) == "3.0"


def test_signs_are_typographic_and_zero_has_none():
    assert signed(40.9 - 38.3, 2) == "+2.60" and signed(-0.05) == "−0.1"
    assert signed(-0.04) == "0.0" and fixed(-0.04, 1) == "0.0" and signed(0.0, 2) == "0.00"
