"""Time series as inline SVG, drawn on the server: no chart library, no JavaScript, works offline.

``line_chart`` is a pure function from data to markup. Every piece of text in it (title, series
labels, units) is escaped here, so the result is safe to put in a page as it is (it is returned as
``Markup``). The picture carries what a person needs at a glance: a title, the unit above the value
axis, the time of day under the time axis (with its zone), nice round ticks (1, 2 or 5 × 10ⁿ; time
steps of whole seconds, minutes or hours), and a legend with each series' latest value. No data
draws the frame with "no data yet" instead of an empty or misleading plot.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from html import escape

from markupsafe import Markup

from leadstream.console.display import compact

PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#475569")  # distinct in hue and lightness
TEXT = "#374151"
TITLE = "#111827"
GRID = "#e5e7eb"
AXIS = "#9ca3af"
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif'
FONT_SIZE = 13
CHAR_WIDTH = 7.4  # an average character at FONT_SIZE, for laying out the legend
PAD = 12  # the left edge of the title, the legend and the unit
SWATCH = 17  # a legend entry's colour square and the gap after it
LINE = 20  # a legend row's height
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

Point = tuple[float, float | None]  # (seconds since the epoch, value); None: no sample (a gap in the line)


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[Point]


def _nice(value: float, *, round_: bool) -> float:
    exponent = math.floor(math.log10(value))
    fraction = value / 10**exponent
    if round_:
        nice = 1 if fraction < 1.5 else 2 if fraction < 3 else 5 if fraction < 7 else 10
    else:
        nice = 1 if fraction <= 1 else 2 if fraction <= 2 else 5 if fraction <= 5 else 10
    return float(nice * 10.0**exponent)


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values covering [low, high]: ``nice_ticks(0, 87)`` → ``[0, 20, 40, 60, 80, 100]``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks need finite bounds, not {low!r}..{high!r}")
    if high < low:
        low, high = high, low
    if high == low:
        high = low + (abs(low) or 1.0)
    step = _nice(_nice(high - low, round_=False) / max(1, target - 1), round_=True)
    first = math.floor(low / step) * step
    last = math.ceil(high / step) * step
    count = round((last - first) / step)
    decimals = max(0, -math.floor(math.log10(step)))
    return [round(first + i * step, decimals) for i in range(count + 1)]


def time_ticks(start: float, end: float, target: int = 6) -> tuple[list[float], int]:
    """Tick times on whole seconds/minutes/hours across [start, end], and the step (seconds)."""
    span = max(end - start, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= target), TIME_STEPS[-1])
    first = math.ceil(start / step) * step
    return [float(t) for t in range(int(first), int(end) + 1, step)], step


def _time_label(t: float, step: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%H:%M" if step >= 60 else "%H:%M:%S")


def _tick_label(value: float, step: float) -> str:
    if step >= 1 or value == 0:
        return compact(value)
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{value:.{decimals}f}"


def _latest(series: Series) -> float | None:
    return next((v for _, v in reversed(series.points) if v is not None and math.isfinite(v)), None)


def _fit(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters with an ellipsis (the full text stays in the SVG's <title>/<desc>)."""
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "…"


def _legend(entries: Sequence[str], width: float, top: float) -> tuple[list[tuple[float, float, str]], float]:
    """Legend entries flowed left to right in rows: ([(x, y, text)], the y below the last row).
    Widths are estimated from the character count (no font measuring on a server)."""
    placed: list[tuple[float, float, str]] = []
    x, y = float(PAD), top
    for text in entries:
        needed = SWATCH + CHAR_WIDTH * len(text)
        if x > PAD and x + needed > width - PAD:
            x, y = float(PAD), y + LINE
        placed.append((x, y, text))
        x += needed + 18
    return placed, (y + LINE if entries else top)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str,
    start: float | None = None,
    end: float | None = None,
    width: int = 600,
    plot_height: int = 170,
    tz: tzinfo = UTC,
    empty: str = "no data yet",
) -> Markup:
    """An SVG line chart of ``series`` over time, with ``title`` and the value axis in ``unit``
    (e.g. "events/s", "seconds"). ``start``/``end`` fix the time window (say the last hour), else
    it spans the data. Values below zero are shown if present; otherwise the axis starts at 0.
    The picture is ``width`` wide (it scales to its box) and as tall as its legend needs."""
    chart_id = "chart-" + hashlib.sha256(f"{title}|{unit}|{len(series)}".encode()).hexdigest()[:10]
    finite = [(t, v) for s in series for t, v in s.points if v is not None and math.isfinite(v) and math.isfinite(t)]
    latest = [(s, _latest(s)) for s in series] if finite else []
    labels = [_fit(f"{s.label}: {compact(v) if v is not None else '—'} {unit}", 60) for s, v in latest]
    legend, legend_bottom = _legend(labels, width, 44.0)
    left, right, bottom = 60, 28, 46
    top = legend_bottom + 18  # room for the unit above the value axis
    plot_w = width - left - right
    height = top + plot_height + bottom
    summary = "; ".join(f"{s.label}: latest {compact(v) if v is not None else 'none'} {unit}" for s, v in latest)
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height:.0f}" width="{width}" '
        f'height="{height:.0f}" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'font-family="{escape(FONT)}" font-size="{FONT_SIZE}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(summary or empty)}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="{PAD}" y="22" font-size="16" font-weight="600" fill="{TITLE}">'
        f"{escape(_fit(title, int((width - 2 * PAD) / 10)))}</text>",
        f'<text x="{PAD}" y="{top - 10:.0f}" fill="{TEXT}">{escape(unit)}</text>',
    ]
    if not finite:
        out += [
            f'<rect x="{left}" y="{top:.0f}" width="{plot_w}" height="{plot_height}" fill="#f9fafb" stroke="{GRID}"/>',
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_height / 2:.1f}" font-size="15" fill="{TEXT}" '
            f'text-anchor="middle" dominant-baseline="middle">{escape(empty)}</text>',
            "</svg>",
        ]
        return Markup("".join(out))

    t0 = start if start is not None else min(t for t, _ in finite)
    t1 = end if end is not None else max(t for t, _ in finite)
    if t1 <= t0:
        t0, t1 = t0 - 30, t0 + 30
    ticks = nice_ticks(min(0.0, min(v for _, v in finite)), max(0.0, max(v for _, v in finite)))
    v0, v1 = ticks[0], ticks[-1]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    base = top + plot_height

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return base - (v - v0) / (v1 - v0) * plot_height

    for index, (lx, ly, text) in enumerate(legend):
        out.append(
            f'<rect x="{lx:.1f}" y="{ly - 10:.1f}" width="11" height="11" rx="2" '
            f'fill="{PALETTE[index % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{lx + SWATCH - 2:.1f}" y="{ly:.1f}" fill="{TEXT}">{escape(text)}</text>')
    for tick in ticks:  # value grid and labels
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="{GRID}"/>')
        out.append(
            f'<text x="{left - 8}" y="{y(tick):.1f}" fill="{TEXT}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(_tick_label(tick, step))}</text>'
        )
    times, time_step = time_ticks(t0, t1)
    for t in times:  # time ticks and labels
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{base:.1f}" y2="{base + 5:.1f}" stroke="{AXIS}"/>')
        out.append(
            f'<text x="{x(t):.1f}" y="{base + 20:.1f}" fill="{TEXT}" '
            f'text-anchor="middle">{escape(_time_label(t, time_step, tz))}</text>'
        )
    zone = datetime.fromtimestamp(t1, tz).tzname() or "local"
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6:.1f}" fill="{TEXT}" '
        f'text-anchor="middle">time of day ({escape(zone)})</text>'
    )
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{base:.1f}" y2="{base:.1f}" stroke="{AXIS}"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top:.1f}" y2="{base:.1f}" stroke="{AXIS}"/>')
    for index, s in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        for run in _runs(s.points, t0, t1):
            if len(run) == 1:
                t, v = run[0]
                out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
            else:
                coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
                out.append(
                    f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" '
                    'stroke-linejoin="round" stroke-linecap="round"/>'
                )
    out.append("</svg>")
    return Markup("".join(out))


def _runs(points: Sequence[Point], t0: float, t1: float) -> list[list[tuple[float, float]]]:
    """The stretches of consecutive samples inside the window, split at gaps (None, NaN)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in sorted(points, key=lambda p: p[0]):
        if v is None or not math.isfinite(v) or not t0 <= t <= t1:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((t, v))
    return [run for run in runs if run]
