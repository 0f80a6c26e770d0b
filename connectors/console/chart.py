"""A line chart of usage over time as inline SVG, drawn on the server (no library).

Values are exact decimals; only pixel positions are computed in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from xml.sax.saxutils import escape

WIDTH, HEIGHT, PAD = 720, 260, 48
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[str, Decimal]]  # (ISO timestamp, value), in time order


def line_chart(series: list[Series], title: str) -> str:
    """An accessible SVG (role img, a title naming what it shows) of every series over
    the union of their timestamps; each point has a tooltip with its exact value."""
    moments = sorted({moment for s in series for moment, _ in s.points})
    values = [value for s in series for _, value in s.points]
    if not moments:
        return ""
    top = max([*values, Decimal(0)]) or Decimal(1)
    step = (WIDTH - 2 * PAD) / max(len(moments) - 1, 1)

    def x(moment: str) -> float:
        return PAD + moments.index(moment) * step

    def y(value: Decimal) -> float:
        return HEIGHT - PAD - float(value / top) * (HEIGHT - 2 * PAD)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="chart-title" class="chart">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'class="axis"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
        f'<text x="{PAD - 6}" y="{PAD}" text-anchor="end" class="tick">{escape(str(top))}</text>',
        f'<text x="{PAD - 6}" y="{HEIGHT - PAD}" text-anchor="end" class="tick">0</text>',
        f'<text x="{PAD}" y="{HEIGHT - PAD + 18}" class="tick">{escape(moments[0])}</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 18}" text-anchor="end" class="tick">'
        f"{escape(moments[-1])}</text>",
    ]
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in one.points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for moment, value in one.points:
            tip = escape(f"{one.label} at {moment}: {value}")
            parts.append(
                f'<circle cx="{x(moment):.1f}" cy="{y(value):.1f}" r="3" fill="{colour}">'
                f"<title>{tip}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def colour_of(index: int) -> str:
    """The colour of the `index`th series (legends draw a swatch of it)."""
    return COLOURS[index % len(COLOURS)]
