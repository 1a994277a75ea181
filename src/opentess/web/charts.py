"""Bar charts as SVG, drawn by the server: no script, no library, readable without colour (each
bar has its value in a tooltip and every chart has its numbers in a table beside it)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 220
LEFT = 84  # room for the axis labels
BOTTOM = 28
TOP = 12


def _nice_max(value: float) -> float:
    """A round number at or above ``value`` for the top of the axis (1, 2, 2.5 or 5 × 10ⁿ)."""
    if value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    return next(step * base for step in (1, 2, 2.5, 5, 10) if step * base >= value * (1 - 1e-9))


def columns(
    points: Sequence[tuple[str, float]], *, label: str, fmt: Callable[[float], str], css: str = "bar"
) -> Markup:
    """Vertical bars, one per point (days), labelled under every few bars."""
    top = _nice_max(max((v for _, v in points), default=0.0))
    plot_w = WIDTH - LEFT - 8
    plot_h = HEIGHT - TOP - BOTTOM
    n = max(len(points), 1)
    slot = plot_w / n
    every = max(1, round(n / 8))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(top * fraction))}</text>'
        )
    for i, (name, value) in enumerate(points):
        h = plot_h * (value / top) if top else 0
        x = LEFT + i * slot + slot * 0.15
        y = TOP + plot_h - h
        parts.append(
            f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{max(slot * 0.7, 1):.1f}" height="{max(h, 0):.1f}">'
            f"<title>{escape(name)}: {escape(fmt(value))}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(name[5:] if len(name) == 10 else name)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def rows(points: Sequence[tuple[str, float]], *, label: str, fmt: Callable[[float], str], css: str = "bar") -> Markup:
    """Horizontal bars, one per point (agents), with their names and values."""
    top = max((v for _, v in points), default=0.0) or 1.0
    line = 28
    height = max(len(points), 1) * line + 8
    name_w = 200
    plot_w = WIDTH - name_w - 110
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for i, (name, value) in enumerate(points):
        y = 4 + i * line
        w = plot_w * value / top
        short = name if len(name) <= 28 else name[:27] + "…"
        parts.append(f'<text class="axis" x="{name_w - 8}" y="{y + 17}" text-anchor="end">{escape(short)}</text>')
        parts.append(
            f'<rect class="{css}" x="{name_w}" y="{y + 4}" width="{max(w, 1):.1f}" height="{line - 10}">'
            f"<title>{escape(name)}: {escape(fmt(value))}</title></rect>"
        )
        parts.append(f'<text class="value" x="{name_w + w + 6:.1f}" y="{y + 17}">{escape(fmt(value))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
