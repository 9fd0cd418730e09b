"""Runs a figure script of scripts/figures/ in this process and hands back the figure it drew,
so a test checks what is plotted (series, bars, markers) and the PNG that was written, not only
that some file appeared: a script that plots the wrong column, or an empty canvas, still writes
a file of the usual size."""

import importlib.util
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "scripts", "figures")


def run_figure(monkeypatch, script: str, *args: str):
    """``python scripts/figures/SCRIPT ARGS…`` in this process; returns the figure its
    ``main()`` saved (the PNG is written as usual, and checked against the figure)."""
    path = os.path.join(FIGURES, script)
    monkeypatch.syspath_prepend(FIGURES)  # the scripts import figure_io from beside them
    spec = importlib.util.spec_from_file_location(f"figure_{script[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = []
    write = module.figure_io.save

    def save(fig, out):
        write(fig, out)
        saved.append((fig, out))

    monkeypatch.setattr(module.figure_io, "save", save)
    monkeypatch.setattr(sys, "argv", [path, *args])
    module.main()
    assert len(saved) == 1, f"{script} saved {len(saved)} figures"
    fig, out = saved[0]
    assert_png_of(fig, out)
    return fig


def assert_png_of(fig, path) -> None:
    """The PNG at ``path`` is ``fig`` rendered: the figure's size at its dpi, and not blank (a
    fair share of non-background pixels, in many colours)."""
    image = matplotlib.image.imread(str(path))
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape[:2] == (round(height), round(width)), image.shape
    rgb = (image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    ink = np.any(rgb < 240, axis=-1).mean()
    assert ink > 0.02, f"{path}: {ink:.1%} of the pixels are drawn"
    assert len(np.unique(rgb, axis=0)) > 16, f"{path}: hardly any colours"


def errorbar_series(ax) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{label: (x, y, half-height of each error bar)} of the error-bar lines of ``ax``."""
    series = {}
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer):
            continue
        line, _, bar_lines = container.lines
        segments = bar_lines[0].get_segments() if bar_lines else []
        errors = np.array([abs(s[1][1] - s[0][1]) / 2 for s in segments])
        series[container.get_label()] = (
            np.asarray(line.get_xdata(), float),
            np.asarray(line.get_ydata(), float),
            errors,
        )
    return series


def line_series(ax) -> dict[str, np.ndarray]:
    """{label: [[x…], [y…]]} of the labelled plain lines of ``ax``."""
    return {
        line.get_label(): np.array([line.get_xdata(), line.get_ydata()], float)
        for line in ax.lines
        if not line.get_label().startswith("_")
    }


def scatter_points(ax) -> np.ndarray:
    """[n, 2]: the (x, y) of every scatter point of ``ax``, in drawing order."""
    offsets = [np.ma.getdata(c.get_offsets()) for c in ax.collections if type(c) is PathCollection]
    return np.concatenate(offsets).astype(float) if offsets else np.zeros((0, 2))


def bars(ax) -> np.ndarray:
    """[n, 2]: (centre x, height) of every bar of ``ax``, in drawing order."""
    return np.array([(p.get_x() + p.get_width() / 2, p.get_height()) for p in ax.patches], float)
