"""Small inline SVG charts for the run report: line curves and grouped bars, no dependencies.

Every label is HTML-escaped; the charts scale with the page (``viewBox``, width 100%).
"""

from __future__ import annotations

import math
from html import escape

# One colour per series, in order (colour-blind friendly, as matplotlib's tab10 starts).
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 28, 40
LOG_MIN_RATIO = 20.0  # log_y only when the largest value is at least this many times the smallest


def _fmt(value: float) -> str:
    """A value for a tooltip or a bar label."""
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> tuple[list[float], int]:
    """About ``count`` round tick values covering [lo, hi] and the decimals that tell them apart
    (``integer``: whole-number steps only, e.g. optimizer steps)."""
    if hi <= lo:
        return [lo], 0 if integer else 3
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    mult = next(m for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    step = mult * mag
    if integer and step < 1:
        step, mult, mag = 1.0, 1, 1.0
    decimals = max(0, -math.floor(math.log10(step)) + (1 if mult == 2.5 else 0))
    ticks = []
    value = math.floor(lo / step) * step
    while value <= hi + step * 1e-9:
        if value >= lo - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks or [lo], decimals


def _frame(title: str, x_label: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'xmlns="http://www.w3.org/2000/svg">'
            f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="chart-title">{escape(title)}</text>'
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 4}" text-anchor="middle" class="axis-label">'
            f'{escape(x_label)}</text>' + "".join(body) + "</svg>")


def _legend(names: list[str]) -> list[str]:
    """Legend entries left to right, wrapped onto a new row where the next one would not fit."""
    out = []
    x, y = LEFT + 8, TOP + 2
    for i, name in enumerate(names):
        width = 22 + 7 * len(name)
        if x > LEFT + 8 and x + width > WIDTH - RIGHT:
            x, y = LEFT + 8, y + 14
        color = COLORS[i % len(COLORS)]
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="{y + 9}" class="legend">{escape(name)}</text>')
        x += width
    return out


def line_chart(series: dict[str, list[list[float]]], title: str, x_label: str, log_y: bool = False) -> str:
    """Curves ``{name: [[x, y], ...]}`` as one SVG; ``log_y`` plots y on a log scale (only
    positive values are drawn). An empty chart says there is no data."""
    points = {name: [(float(x), float(y)) for x, y in pts if not log_y or y > 0] for name, pts in series.items()}
    values = [p for pts in points.values() for p in pts]
    if log_y and values and max(y for _, y in values) < LOG_MIN_RATIO * min(y for _, y in values):
        log_y = False  # a narrow range reads better on a linear scale
    if not values:
        empty = f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">no data</text>'
        return _frame(title, x_label, [empty])
    xs = [x for x, _ in values]
    ys = [math.log10(y) if log_y else y for _, y in values]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 0.5
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.08
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    body = [f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot-area"/>']
    y_ticks, y_dec = _ticks(y0, y1)
    for t in y_ticks:
        label = _fmt(10 ** t) if log_y else f"{t:.{y_dec}f}"
        body.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>'
                    f'<text x="{LEFT - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    x_ticks, x_dec = _ticks(x0, x1, 6, integer=all(x == int(x) for x in xs))
    for t in x_ticks:
        body.append(f'<text x="{sx(t):.1f}" y="{TOP + ph + 14}" text-anchor="middle" class="tick">{t:.{x_dec}f}</text>')
    for i, (name, pts) in enumerate(points.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(math.log10(y) if log_y else y):.1f}" for x, y in pts)
        if len(pts) == 1:
            x, y = pts[0]
            body.append(f'<circle cx="{sx(x):.1f}" cy="{sy(math.log10(y) if log_y else y):.1f}" r="3" fill="{color}"/>')
        elif pts:
            body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8">'
                        f'<title>{escape(name)}</title></polyline>')
    body += _legend(list(points))
    return _frame(title + (" (log scale)" if log_y else ""), x_label, body)


def bar_chart(groups: list[str], bars: dict[str, list[float | None]], title: str, y_max: float = 1.0) -> str:
    """Grouped bars: one group per entry of ``groups``, one bar per ``bars`` name (values in
    [0, y_max]; None draws no bar)."""
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    body = [f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot-area"/>']
    y_ticks, y_dec = _ticks(0.0, y_max)
    for t in y_ticks:
        y = TOP + ph - t / y_max * ph
        body.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                    f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{t:.{y_dec}f}</text>')
    n = max(len(bars), 1)
    group_w = pw / max(len(groups), 1)
    bar_w = group_w * 0.8 / n
    for g, group in enumerate(groups):
        gx = LEFT + g * group_w
        body.append(f'<text x="{gx + group_w / 2:.1f}" y="{TOP + ph + 14}" text-anchor="middle" class="tick">'
                    f'{escape(group)}</text>')
        for i, (name, values) in enumerate(bars.items()):
            value = values[g] if g < len(values) else None
            if value is None:
                continue
            h = max(0.0, min(value, y_max)) / y_max * ph
            x = gx + group_w * 0.1 + i * bar_w
            body.append(f'<rect x="{x:.1f}" y="{TOP + ph - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                        f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(name)} {escape(group)}: '
                        f'{value:.3f}</title></rect>')
    body += _legend(list(bars))
    return _frame(title, "", body)
