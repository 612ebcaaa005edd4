"""``dispatchctl replay --since ... --plot FILE``: cost per tick, one line per solver.

``FILE.svg`` is written here, by hand, with no dependency; any other name (``.png``,
``.pdf``) goes through matplotlib, which is in the ``bench`` extra, not the base
install: it is imported only then, and its absence is a one-line error.
"""

from __future__ import annotations

import importlib
import math
from html import escape
from typing import Any

from coordinator.errors import ConfigError

__all__ = ["write_plot"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 800, 400, 70, 160, 30, 40


def write_plot(path: str, title: str, series: dict[str, list[float | None]]) -> None:
    """Lines of ``series`` (name -> one value per tick, ``None``: none) against the
    tick's index, into ``path``."""
    if path.lower().endswith(".svg"):
        text = _svg(title, series)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise ConfigError(f"--plot {path}: {exc.strerror}") from exc
        return
    _matplotlib(path, title, series)


def _svg(title: str, series: dict[str, list[float | None]]) -> str:
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - 1.0, high + 1.0
    n = max((len(vs) for vs in series.values()), default=1)
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(i: int) -> float:
        return _LEFT + width * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return _TOP + height * (1 - (v - low) / (high - low))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{_W}" height="{_H}" fill="white"/>',
           f'<text x="{_LEFT}" y="18" font-size="14">{escape(title)}</text>',
           f'<line x1="{_LEFT}" y1="{_TOP + height}" x2="{_LEFT + width}" '
           f'y2="{_TOP + height}" stroke="black"/>',
           f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + height}" stroke="black"/>',
           f'<text x="{_LEFT + width / 2}" y="{_H - 8}" text-anchor="middle">tick '
           f'(oldest first, {n} ticks)</text>']
    for k in range(5):
        v = low + (high - low) * k / 4
        out.append(f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    for index, (name, vs) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(vs):
            if value is None or not math.isfinite(value):
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(value):.1f}")
        for run in runs:
            if run:
                out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                           f'points="{" ".join(run)}"/>')
        ly = _TOP + 16 * index + 8
        out.append(f'<line x1="{_W - _RIGHT + 10}" y1="{ly}" x2="{_W - _RIGHT + 30}" '
                   f'y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{_W - _RIGHT + 36}" y="{ly + 4}">{escape(name)}</text>')
    out.append(f'<text x="14" y="{_TOP + height / 2}" transform="rotate(-90 14 '
               f'{_TOP + height / 2})" text-anchor="middle">cost</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _matplotlib(path: str, title: str, series: dict[str, list[float | None]]) -> None:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ConfigError(f"--plot {path}: writing this format needs matplotlib: pip install "
                          "'dispatch-coordinator[bench]' (or name the file .svg, which "
                          "needs nothing)") from None
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for name, vs in series.items():
        axes.plot(range(len(vs)), [math.nan if v is None else v for v in vs], label=name)
    axes.set_xlabel("tick (oldest first)")
    axes.set_ylabel("cost")
    axes.set_title(title)
    axes.legend()
    try:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--plot {path}: {exc}") from exc
    finally:
        plt.close(figure)
