"""Numbers as the tables print them: rounded as the decimals they stand for, halves away from zero.

Accuracies are k / n and means of them; as binary floats they sit just below a half (2.55 is 2.5499999999999998)
or carry float32 noise from older eval.json files (36/1000 stored as 0.035999998), and Python's own formatting then
rounds 2.55 to 2.5. Seven significant digits (float32's precision) remove both before rounding, so 2.55 prints
2.6 under either usual rule.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals; a value that rounds to zero has no minus sign."""
    rounded = Decimal(f"{value:.7g}").quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return str(abs(rounded) if rounded == 0 else rounded)


def signed(value: float, digits: int = 1) -> str:
    """+1.20 or −0.50 (a minus sign, not a hyphen); a value that rounds to zero has no sign."""
    text = fixed(abs(value), digits)
    if Decimal(text) == 0:
        return text
    return ("+" if value > 0 else "−") + text
