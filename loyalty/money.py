"""Money arithmetic. 1 bonus = 1 rouble; amounts are Decimal with two places.

The one rounding rule of the circle lives here: every computed amount of bonuses is
rounded down to the kopeck, so the circle never grants a fraction it did not earn.
"""

from decimal import ROUND_DOWN, Decimal, InvalidOperation

KOPECK = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal("100")


def round_down(value: Decimal) -> Decimal:
    """Round an amount down to the kopeck (towards zero). The circle's only rounding rule."""
    return Decimal(value).quantize(KOPECK, rounding=ROUND_DOWN)


def percent_of(amount: Decimal, percent: Decimal) -> Decimal:
    """`percent`% of `amount`, rounded down to the kopeck."""
    return round_down(Decimal(amount) * Decimal(percent) / HUNDRED)


def share_of(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """`total` × part / whole, rounded down: the proportional part of an amount."""
    if whole <= 0:
        return ZERO
    return round_down(Decimal(total) * Decimal(part) / Decimal(whole))


def as_money(value) -> Decimal:
    """A sum read from the database as an amount with two places; None counts as zero.

    SQLite adds decimals as floats (263.570000000000), so sums are brought back to the
    kopeck here. Not a rounding rule: the values summed were whole kopecks already."""
    return Decimal(value or 0).quantize(KOPECK)


def parse_amount(value) -> Decimal:
    """An amount as people and CRMs write it ("1 500,50", "1500.5 ₽", 1500.5) as an exact
    Decimal, unrounded; ValueError when it is not a finite number."""
    if isinstance(value, float):
        value = repr(value)
    text = str(value if value is not None else "").replace("\u00a0", "").replace(" ", "").replace(",", ".")
    try:
        amount = Decimal(text.removesuffix("₽").removesuffix("руб."))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a number: {value!r}")
    return amount
