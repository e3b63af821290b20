"""Geometry for the analytics SVG charts; templates/console/_charts.html draws it (escaped).

Numbers only: labels and titles are rendered by the template with autoescape on, so nothing
from the database is ever put into markup here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 12, 28


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    base = 10**exp
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * base:
            return step * base
    return 10 * base


def _fmt(value: float, unit: str = "") -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.0f} min"
        return f"{value:.0f} s"
    return f"{value:g}" if value != int(value) else f"{int(value)}"


@dataclass
class Chart:
    kind: str  # bar | line
    title: str
    unit: str = ""
    width: int = W
    height: int = H
    bars: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    dots: list = field(default_factory=list)
    yticks: list = field(default_factory=list)
    xlabels: list = field(default_factory=list)
    empty: bool = False


def _x_labels(labels: list[str], step_w: float) -> list[dict]:
    every = max(1, math.ceil(len(labels) / 8))
    out = []
    for i, label in enumerate(labels):
        if i % every == 0 or (i == len(labels) - 1 and i % every >= max(2, every // 2 + 1)):
            out.append({"x": round(PAD_L + step_w * (i + 0.5), 1), "y": H - 8, "label": label})
    return out


def _y_ticks(vmax: float, unit: str) -> list[dict]:
    inner = H - PAD_T - PAD_B
    return [{"y": round(PAD_T + inner * (1 - f), 1), "label": _fmt(vmax * f, unit)} for f in (0, 0.5, 1)]


def bar_chart(
    title: str,
    labels: list[str],
    values: list[float | None],
    *,
    unit: str = "",
    overlay: list[float | None] | None = None,
) -> Chart:
    """Bars for `values`; an optional line (e.g. a subset such as resolved by the bot) on top."""
    chart = Chart("bar", title, unit)
    clean = [v or 0 for v in values]
    vmax = _nice_max(max(clean + [v or 0 for v in (overlay or [])] + [0]))
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / max(1, len(labels))
    for i, (label, v) in enumerate(zip(labels, clean, strict=False)):
        h = inner_h * v / vmax
        chart.bars.append(
            {
                "x": round(PAD_L + step * i + step * 0.15, 1),
                "y": round(PAD_T + inner_h - h, 1),
                "w": round(max(1.0, step * 0.7), 1),
                "h": round(h, 1),
                "label": label,
                "value": _fmt(v, unit),
            }
        )
    if overlay is not None:
        chart.paths = _paths(overlay, step, vmax)
    chart.yticks = _y_ticks(vmax, unit)
    chart.xlabels = _x_labels(labels, step)
    chart.empty = not any(clean)
    return chart


def _paths(values: list[float | None], step: float, vmax: float) -> list[str]:
    inner_h = H - PAD_T - PAD_B
    paths: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                paths.append(current)
            current = []
            continue
        x = PAD_L + step * (i + 0.5)
        y = PAD_T + inner_h * (1 - min(v, vmax) / vmax)
        current.append((round(x, 1), round(y, 1)))
    if current:
        paths.append(current)
    return ["M" + " L".join(f"{x},{y}" for x, y in p) for p in paths]


def line_chart(
    title: str, labels: list[str], values: list[float | None], *, unit: str = "", vmax: float | None = None
) -> Chart:
    """A line with a dot per known value; unknown days (None) leave a gap."""
    chart = Chart("line", title, unit)
    known = [v for v in values if v is not None]
    top = vmax if vmax is not None else _nice_max(max([*known, 0]))
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / max(1, len(labels))
    chart.paths = _paths(values, step, top)
    for i, (label, v) in enumerate(zip(labels, values, strict=False)):
        if v is None:
            continue
        chart.dots.append(
            {
                "x": round(PAD_L + step * (i + 0.5), 1),
                "y": round(PAD_T + inner_h * (1 - min(v, top) / top), 1),
                "label": label,
                "value": _fmt(v, unit),
            }
        )
    chart.yticks = _y_ticks(top, unit)
    chart.xlabels = _x_labels(labels, step)
    chart.empty = not known
    return chart
