"""Charts as inline SVG, rendered here: the HTML report needs no script and no network.

>>> from rollguard.preflight.base import Plot
>>> svg = render(Plot("lines", "Learning curve", {"holdout": [(100, 0.8), (400, 0.9)]},
...                   x_label="training rows", y_label="accuracy"))
>>> svg.startswith("<svg") and "Learning curve" in svg and "<polyline" in svg
True
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from rollguard.preflight.base import Plot
from rollguard.preflight.statistics import unscale

__all__ = ["render"]

WIDTH, HEIGHT = 600, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 30, 50
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    ticks, x = [], first
    while x <= hi + step * 1e-9:
        ticks.append(round(x, 12))
        x += step
    return ticks


def _scale_ticks(lo: float, hi: float, scale: str) -> list[float]:
    """Tick positions on a scale: whole powers of ten on a log scale spanning a decade or
    more, else evenly spaced ones."""
    if scale != "linear" and hi - lo >= 1.5:
        first, last = math.ceil(lo), math.floor(hi)
        step = max(1, math.ceil((last - first + 1) / 7))
        return [float(t) for t in range(first, last + 1, step)]
    return _ticks(lo, hi)


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.2g}"
    return f"{x:.4g}"


class _Frame:
    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.w, self.h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * self.w

    def y(self, v: float) -> float:
        return TOP + self.h - (v - self.y0) / (self.y1 - self.y0) * self.h

    def axes(self, plot: Plot, x_ticks: bool = True) -> list[str]:
        parts = [f'<rect x="{LEFT}" y="{TOP}" width="{self.w}" height="{self.h}" '
                 'fill="none" stroke="#999"/>']
        for t in _ticks(self.y0, self.y1):
            y = self.y(t)
            parts.append(f'<line x1="{LEFT}" x2="{LEFT + self.w}" y1="{y:.1f}" y2="{y:.1f}" '
                         'stroke="#eee"/>')
            parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                         f'{_fmt(t)}</text>')
        if x_ticks:
            for t in _scale_ticks(self.x0, self.x1, plot.x_scale):
                x = self.x(t)
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + self.h}" '
                             f'y2="{TOP + self.h + 4}" stroke="#999"/>')
                parts.append(f'<text x="{x:.1f}" y="{TOP + self.h + 15}" text-anchor="middle">'
                             f'{_fmt(unscale(t, plot.x_scale))}</text>')
        parts.append(f'<text x="{LEFT + self.w / 2}" y="{HEIGHT - 18}" text-anchor="middle">'
                     f'{escape(plot.x_label)}</text>')
        parts.append(f'<text transform="translate(12,{TOP + self.h / 2}) rotate(-90)" '
                     f'text-anchor="middle">{escape(plot.y_label)}</text>')
        parts.append(f'<text x="{LEFT}" y="18" font-weight="bold">{escape(plot.title)}</text>')
        return parts


def _legend(names: list[str]) -> list[str]:
    parts, x = [], WIDTH - RIGHT
    for i, name in reversed(list(enumerate(names))):
        width = 14 + 7 * len(name)
        x -= width + 8
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{COLOURS[i % 5]}"/>'
                     f'<text x="{x + 14}" y="17">{escape(name)}</text>')
    return parts


def _histogram(plot: Plot) -> list[str]:
    edges = plot.edges or [0.0, 1.0]
    top = max((max(v) for v in plot.series.values() if v), default=1.0) * 1.08 or 1.0
    frame = _Frame(edges[0], edges[-1], 0.0, top)
    parts = frame.axes(plot)
    for i, (name, shares) in enumerate(plot.series.items()):
        colour = COLOURS[i % 5]
        for j, share in enumerate(shares):
            if share <= 0:
                continue
            x0, x1 = frame.x(edges[j]), frame.x(edges[j + 1])
            y = frame.y(share)
            parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
                         f'height="{frame.y(0) - y:.1f}" fill="{colour}" fill-opacity="0.45" '
                         f'stroke="{colour}" stroke-width="0.5"><title>{escape(name)}: '
                         f'{share:.3g} in [{_fmt(unscale(edges[j], plot.x_scale))}, '
                         f'{_fmt(unscale(edges[j + 1], plot.x_scale))})</title>'
                         '</rect>')
    for k, (label, x) in enumerate(plot.markers.items()):
        if x is None or not frame.x0 <= x <= frame.x1:
            continue
        colour = COLOURS[list(plot.series).index(label.split()[0]) % 5] \
            if label.split()[0] in plot.series else "#333"
        px = frame.x(x)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{TOP + frame.h}" '
                     f'stroke="{colour}" stroke-dasharray="4 3"/>')
        right = px > LEFT + 0.7 * frame.w  # labels near the right edge go to its left
        parts.append(f'<text x="{px - 3 if right else px + 3:.1f}" '
                     f'y="{TOP + 12 + 11 * (k % 4)}" fill="{colour}" '
                     f'text-anchor="{"end" if right else "start"}">{escape(label)} '
                     f'{_fmt(unscale(x, plot.x_scale))}</text>')
    return parts + _legend(list(plot.series))


def _bars(plot: Plot) -> list[str]:
    cats = plot.categories or []
    top = max((max(v) for v in plot.series.values() if v), default=1.0) * 1.08 or 1.0
    frame = _Frame(0.0, max(1, len(cats)), 0.0, top)
    parts = frame.axes(plot, x_ticks=False)
    k = max(1, len(plot.series))
    for c, cat in enumerate(cats):
        x = frame.x(c)
        slot = (frame.x(c + 1) - x) * 0.8 / k
        for i, (name, shares) in enumerate(plot.series.items()):
            y = frame.y(shares[c])
            parts.append(f'<rect x="{x + (frame.x(c + 1) - x) * 0.1 + i * slot:.1f}" '
                         f'y="{y:.1f}" width="{slot:.1f}" height="{frame.y(0) - y:.1f}" '
                         f'fill="{COLOURS[i % 5]}"><title>{escape(name)} {escape(cat)}: '
                         f'{shares[c]:.3g}</title></rect>')
        parts.append(f'<text x="{(x + frame.x(c + 1)) / 2:.1f}" y="{TOP + frame.h + 15}" '
                     f'text-anchor="middle">{escape(cat[:12])}</text>')
    return parts + _legend(list(plot.series))


def _lines(plot: Plot) -> list[str]:
    points = [p for pts in plot.series.values() for p in pts if p[1] is not None]
    if not points:
        return [f'<text x="{LEFT}" y="40">no data</text>']
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    pad = (max(ys) - min(ys)) * 0.1 or 0.01
    frame = _Frame(min(xs), max(xs), min(ys) - pad, max(ys) + pad)
    parts = frame.axes(plot)
    for i, (name, pts) in enumerate(plot.series.items()):
        colour = COLOURS[i % 5]
        coords = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in pts if y is not None)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        for x, y in pts:
            if y is not None:
                parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3" '
                             f'fill="{colour}"><title>{escape(name)}: {_fmt(y)} at '
                             f'{_fmt(x)}</title></circle>')
    return parts + _legend(list(plot.series))


def render(plot: Plot | dict[str, Any]) -> str:
    """One chart as an ``<svg>`` element."""
    if isinstance(plot, dict):
        plot = Plot(**plot)
    body = {"histogram": _histogram, "bars": _bars, "lines": _lines}[plot.kind](plot)
    note = f'<text x="{LEFT}" y="{HEIGHT - 4}" fill="#666">{escape(plot.note)}</text>' \
        if plot.note else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11" '
            f'role="img" aria-label="{escape(plot.title)}">' + "".join(body) + note + "</svg>")
