"""One picture of every corruption x severity on one image, for a person to look at."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .corruptions import FrostTexturesMissing, corrupt, load_suite
from .data.sources import fit_to_suite


def default_image() -> Image.Image:
    """A real photograph that ships with scikit-learn (a dependency), so the gallery works offline."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))


def make_gallery(image: Image.Image | None = None, suite: str = "imagenet-c", seed: int = 0,
                 extra: bool = True, tile: int | None = None) -> tuple[Image.Image, list[str]]:
    """Rows: corruptions; columns: clean, severities 1..5. Returns the picture and notes on rows left out."""
    s = load_suite(suite)
    img = fit_to_suite((image or default_image()).convert("RGB"), s.image_size, resize_crop=True)
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] / 255
    size = tile or max(s.image_size, 128)
    label_w, pad = 150, 4
    names = s.names(extra=extra)
    rows, notes = [], []
    for name in names:
        try:
            outs = [corrupt(x, name, sev, suite=suite, seed=seed)[0] for sev in range(1, 6)]
        except FrostTexturesMissing as e:
            notes.append(f"{name}: {e}")
            continue
        rows.append((name, [x[0], *outs]))
    canvas = Image.new("RGB", (label_w + 6 * (size + pad), 20 + len(rows) * (size + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, head in enumerate(["clean", "1", "2", "3", "4", "5"]):
        draw.text((label_w + j * (size + pad) + size // 2 - 10, 4), head, fill="black")
    for r, (name, tiles) in enumerate(rows):
        y0 = 20 + r * (size + pad)
        draw.text((6, y0 + size // 2 - 6), name, fill="black")
        for j, t in enumerate(tiles):
            a = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(a).resize((size, size), Image.NEAREST), (label_w + j * (size + pad), y0))
    return canvas, notes
