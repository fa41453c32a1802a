"""Small charts drawn on the server as inline SVG: no JavaScript, no files from elsewhere.

- `bar_chart`: one series as bars, the previous period's as faint bars beside them;
- `line_chart`: one or more series as lines with a dot per point, each optionally with the
  previous period's as a faint dashed line;
- `horizontal_bar_chart`: labelled rows (the segment mix), each bar a link when given one.

Each chart is an `<svg role="img">` labelled by its `<title>` and `<desc>` (the caller writes
the summary a screen reader should hear), with a `<title>` per bar and dot as its tooltip, the
value axis' ticks and the buckets' labels. Every text that goes in is escaped. Colours are
presentation attributes, so the charts need no style sheet. The values are assumed to be
numbers (Decimal, int or float); formatting them is the caller's (`value_format`,
`tick_format`)."""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

__all__ = ["COLOURS", "Line", "bar_chart", "horizontal_bar_chart", "line_chart", "nice_ticks"]

COLOURS = {
    "current": "#2a6f4e",
    "previous": "#2a6f4e",
    "axis": "#5f6b66",
    "grid": "#dde3e0",
    "text": "#1d2521",
}
PREVIOUS_OPACITY = "0.28"
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 30, 28  # the plot's margins: tick labels, legend, bucket labels
MAX_LABELS = 8  # bucket labels along the axis at most; the rest are in the tooltips
_ids = itertools.count(1)


@dataclass(frozen=True)
class Line:
    """One series of a line chart: its name (legend), values, colour, and the previous period's values."""

    name: str
    values: Sequence
    colour: str = COLOURS["current"]
    previous: Sequence | None = None


def _e(text) -> str:
    return escape(str(text))


def _n(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 4, integer: bool = False) -> list[float]:
    """Round tick values from ≤ `low` to ≥ `high` (0 included), about `count` steps of 1, 2 or 5 × 10ⁿ."""
    low, high = min(0.0, low), max(0.0, high)
    if high == low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, math.ceil(step))
    first, last = math.floor(low / step), math.ceil(high / step)
    return [n * step for n in range(first, last + 1)]


def _default_format(value) -> str:
    return str(value)


def _open(title: str, desc: str, width: int, height: int, extra_class: str) -> tuple[list[str], str]:
    uid = f"chart-{next(_ids)}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {_e(extra_class)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'aria-labelledby="{uid}-title {uid}-desc" font-family="system-ui, sans-serif" font-size="11">',
        f'<title id="{uid}-title">{_e(title)}</title>',
        f'<desc id="{uid}-desc">{_e(desc)}</desc>',
    ]
    return parts, uid


class _Frame:
    """The plot area with a value axis from the ticks of `values`."""

    def __init__(self, values: Sequence[float], tick_format: Callable, integer: bool):
        self.ticks = nice_ticks(min(values, default=0.0), max(values, default=0.0), integer=integer)
        self.low, self.high = self.ticks[0], self.ticks[-1]
        self.tick_format = tick_format
        self.x0, self.x1 = LEFT, WIDTH - RIGHT
        self.y0, self.y1 = HEIGHT - BOTTOM, TOP  # y0 is the bottom

    def y(self, value: float) -> float:
        return self.y0 - (value - self.low) / (self.high - self.low) * (self.y0 - self.y1)

    def axis(self, unit: str = "") -> list[str]:
        parts = ['<g class="axis y-axis">']
        if unit:
            parts.append(
                f'<text x="{self.x0 - 6}" y="12" text-anchor="end" dominant-baseline="middle" '
                f'fill="{COLOURS["axis"]}">{_e(unit)}</text>'
            )
        for tick in self.ticks:
            y = _n(self.y(tick))
            parts.append(
                f'<line x1="{self.x0}" x2="{self.x1}" y1="{y}" y2="{y}" stroke="{COLOURS["grid"]}" stroke-width="1"/>'
            )
            parts.append(
                f'<text x="{self.x0 - 6}" y="{y}" text-anchor="end" dominant-baseline="middle" '
                f'fill="{COLOURS["axis"]}">{_e(self.tick_format(tick))}</text>'
            )
        parts.append("</g>")
        return parts

    def labels(self, labels: Sequence[str], centres: Sequence[float]) -> list[str]:
        every = max(1, math.ceil(len(labels) / MAX_LABELS))
        parts = ['<g class="axis x-axis">']
        for index, (label, x) in enumerate(zip(labels, centres, strict=True)):
            if index % every == 0:
                parts.append(
                    f'<text x="{_n(x)}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                    f'fill="{COLOURS["axis"]}">{_e(label)}</text>'
                )
        parts.append("</g>")
        return parts


def _legend(items: Sequence[tuple[str, str, str, bool]]) -> list[str]:
    """Legend entries (name, colour, opacity, dashed) along the top, from the left."""
    parts, x = ['<g class="legend">'], LEFT
    for name, colour, opacity, dashed in items:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 16}" y1="12" y2="12" stroke="{colour}" stroke-opacity="{opacity}" '
            f'stroke-width="6"{dash}/>'
        )
        parts.append(f'<text x="{x + 21}" y="12" dominant-baseline="middle" fill="{COLOURS["text"]}">{_e(name)}</text>')
        x += 34 + 7 * len(str(name))
    parts.append("</g>")
    return parts


def _as_float(values: Sequence) -> list[float]:
    return [float(value) for value in values]


def bar_chart(
    *,
    title: str,
    desc: str,
    labels: Sequence[str],
    values: Sequence,
    previous: Sequence | None = None,
    tooltips: Sequence[str] | None = None,
    previous_tooltips: Sequence[str] | None = None,
    legend: tuple[str, str] | None = None,
    value_format: Callable = _default_format,
    tick_format: Callable = _default_format,
    integer: bool = False,
    unit: str = "",
) -> SafeString:
    """Bars of `values`, one per label; with `previous` (the same length), each bar has the
    previous period's faint bar on its left. `legend` names the two: (current, previous);
    `unit` goes above the value axis. Tooltips default to "label: value"."""
    if previous is not None and len(previous) != len(values):
        raise ValueError("previous must have as many values as values")
    if len(labels) != len(values):
        raise ValueError("labels must have as many items as values")
    frame = _Frame(_as_float(values) + _as_float(previous or []), tick_format, integer)
    parts, _uid = _open(title, desc, WIDTH, HEIGHT, "bar-chart")
    parts += frame.axis(unit)
    slot = (frame.x1 - frame.x0) / max(1, len(values))
    width = slot * (0.38 if previous is not None else 0.7)
    tooltips = tooltips or [f"{label}: {value_format(value)}" for label, value in zip(labels, values, strict=True)]
    zero = frame.y(0)
    centres = []
    parts.append('<g class="bars">')
    for index, value in enumerate(values):
        centre = frame.x0 + slot * (index + 0.5)
        centres.append(centre)
        if previous is not None:
            old = previous[index]
            tip = previous_tooltips[index] if previous_tooltips else value_format(old)
            parts.append(_bar(centre - width, frame.y(float(old)), zero, width, tip, "bar-previous", PREVIOUS_OPACITY))
            x = centre
        else:
            x = centre - width / 2
        parts.append(_bar(x, frame.y(float(value)), zero, width, tooltips[index], "bar", "1"))
    parts.append("</g>")
    parts += frame.labels(labels, centres)
    if legend:
        parts += _legend(
            [(legend[0], COLOURS["current"], "1", False), (legend[1], COLOURS["previous"], PREVIOUS_OPACITY, False)]
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text in it went through escape())


def _bar(x: float, y: float, zero: float, width: float, tooltip: str, css: str, opacity: str) -> str:
    top, height = min(y, zero), abs(zero - y)
    return (
        f'<rect class="{css}" x="{_n(x)}" y="{_n(top)}" width="{_n(width)}" height="{_n(height)}" '
        f'fill="{COLOURS["current"]}" fill-opacity="{opacity}"><title>{_e(tooltip)}</title></rect>'
    )


def line_chart(
    *,
    title: str,
    desc: str,
    labels: Sequence[str],
    lines: Sequence[Line],
    previous_name: str | None = None,
    value_format: Callable = _default_format,
    tick_format: Callable = _default_format,
    integer: bool = False,
    unit: str = "",
) -> SafeString:
    """A line per `Line`, a dot per point (its tooltip "name, label: value"); a line's
    `previous` values are drawn faint and dashed, named in the legend by `previous_name`."""
    for line in lines:
        if len(line.values) != len(labels) or (line.previous is not None and len(line.previous) != len(labels)):
            raise ValueError("every line must have a value per label")
    everything = [value for line in lines for value in _as_float(line.values) + _as_float(line.previous or [])]
    frame = _Frame(everything, tick_format, integer)
    parts, _uid = _open(title, desc, WIDTH, HEIGHT, "line-chart")
    parts += frame.axis(unit)
    slot = (frame.x1 - frame.x0) / max(1, len(labels))
    centres = [frame.x0 + slot * (index + 0.5) for index in range(len(labels))]

    def points(values) -> str:
        return " ".join(f"{_n(x)},{_n(frame.y(float(v)))}" for x, v in zip(centres, values, strict=True))

    for line in lines:
        if line.previous is not None:
            parts.append(
                f'<polyline class="line-previous" points="{points(line.previous)}" fill="none" '
                f'stroke="{line.colour}" stroke-opacity="{PREVIOUS_OPACITY}" stroke-width="2" '
                f'stroke-dasharray="4 3"/>'
            )
    for line in lines:
        parts.append(f'<g class="series"><title>{_e(line.name)}</title>')
        parts.append(
            f'<polyline class="line" points="{points(line.values)}" fill="none" stroke="{line.colour}" '
            f'stroke-width="2" stroke-linejoin="round"/>'
        )
        for x, label, value in zip(centres, labels, line.values, strict=True):
            tip = f"{line.name}, {label}: {value_format(value)}"
            parts.append(
                f'<circle class="point" cx="{_n(x)}" cy="{_n(frame.y(float(value)))}" r="3" fill="{line.colour}">'
                f"<title>{_e(tip)}</title></circle>"
            )
        parts.append("</g>")
    parts += frame.labels(labels, centres)
    legend = [(line.name, line.colour, "1", False) for line in lines]
    if previous_name and any(line.previous is not None for line in lines):
        legend.append((previous_name, COLOURS["axis"], PREVIOUS_OPACITY, True))
    parts += _legend(legend)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text in it went through escape())


def horizontal_bar_chart(
    *,
    title: str,
    desc: str,
    rows: Sequence[tuple[str, int | float | Decimal, str | None]],
    value_format: Callable = _default_format,
) -> SafeString:
    """A row per (label, value, link): the label, a bar as long as the value (against the
    largest), the value after it; a row with a link is one `<a>` (keyboard-focusable)."""
    row_height, label_width, value_width = 26, 170, 60
    height = row_height * max(1, len(rows)) + 8
    parts, _uid = _open(title, desc, WIDTH, height, "hbar-chart")
    largest = max((float(value) for _label, value, _link in rows), default=0.0) or 1.0
    span = WIDTH - label_width - value_width - 12
    for index, (label, value, link) in enumerate(rows):
        y = 4 + index * row_height
        length = max(0.0, float(value)) / largest * span
        shown = value_format(value)
        row = [
            f'<text x="{label_width - 8}" y="{y + row_height / 2}" text-anchor="end" dominant-baseline="middle" '
            f'fill="{COLOURS["text"]}">{_e(label)}</text>',
            f'<rect class="hbar" x="{label_width}" y="{y + 4}" width="{_n(length)}" height="{row_height - 8}" '
            f'fill="{COLOURS["current"]}" rx="2"><title>{_e(label)}: {_e(shown)}</title></rect>',
            f'<text x="{_n(label_width + length + 6)}" y="{y + row_height / 2}" dominant-baseline="middle" '
            f'fill="{COLOURS["text"]}" font-weight="600">{_e(shown)}</text>',
        ]
        if link:
            parts.append(f'<a href="{_e(link)}" class="row">')
            parts += row
            parts.append("</a>")
        else:
            parts += row
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text in it went through escape())
