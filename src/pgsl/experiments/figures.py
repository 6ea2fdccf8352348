"""Image grids for the report: Fig. 4 (reconstructions) and Fig. 5 (adversarial examples)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from pgsl.checkpoint import write_bytes_atomic


def _as_image(t: Tensor, size: tuple[int, int]) -> Image.Image:
    """(C, h, w) -> PIL image of ``size``. Images (1 or 3 channels) keep their [0, 1] scale, so
    reconstructions and perturbations are shown as they are; feature maps (any other channel
    count) are averaged in magnitude and stretched to their own range."""
    t = t.detach().float().cpu()
    if t.shape[0] not in (1, 3):
        t = t.abs().mean(0, keepdim=True)
        lo, hi = float(t.min()), float(t.max())
        t = (t - lo) / (hi - lo) if hi > lo else t * 0
    arr = (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    return img.resize(size[::-1], Image.Resampling.NEAREST)


def save_grid(path: Path, columns: dict[str, Tensor], rows: int = 8, cell: int = 64) -> None:
    """Fig. 4-style grid: a header with each column's name, then one row per victim, one column per
    tensor in ``columns`` (same victims, same order)."""
    from PIL import ImageDraw

    names = list(columns)
    n = min(rows, *(len(v) for v in columns.values()))
    header = 14
    grid = Image.new("L", (cell * len(names), header + cell * n), 255)
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(names):
        draw.text((j * cell + 2, 1), name[: cell // 6], fill=0)
        for i in range(n):
            grid.paste(_as_image(columns[name][i], (cell, cell)).convert("L"),
                       (j * cell, header + i * cell))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
