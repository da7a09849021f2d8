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


def harsher_earlier(suite) -> list[str]:
    """Corruptions whose own published table makes an earlier severity harsher than a later one (AlexNet's
    error falls as the severity rises): tiles that look out of order but are faithful. ImageNet-C's
    elastic_transform is the one: severities 1-2 warp with alpha 488 and a large affine, 3-5 with a small one."""
    notes = []
    for name in suite.names(extra=True):
        err = suite.corruptions[name].alexnet_error
        if not err:
            continue
        # the first severity that some later one is milder than
        out_of_order = [(j, later) for j in range(5) if (later := [k for k in range(j + 1, 5) if err[k] < err[j]])]
        for j, later in out_of_order[:1]:
            notes.append(f"{name}: severity {j + 1} is harsher than {', '.join(str(k + 1) for k in later)} in "
                         f"the {suite.name} table itself (AlexNet error "
                         f"{' / '.join(f'{100 * e:.1f}' for e in err)} %, {suite.corruptions[name].source}); "
                         "the tiles follow it")
    return notes


def make_gallery(image: Image.Image | None = None, suite: str = "imagenet-c", seed: int = 0,
                 extra: bool = True, tile: int | None = None) -> tuple[Image.Image, list[str]]:
    """Rows: corruptions; columns: clean, severities 1..5, and a caption for the tiles that look out of order
    but follow the table (:func:`harsher_earlier`). Returns the picture and notes on rows left out."""
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
    caption = harsher_earlier(s)
    canvas = Image.new("RGB", (label_w + 6 * (size + pad), 20 + len(rows) * (size + pad) + 14 * len(caption) + 6),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for j, head in enumerate(["clean", "1", "2", "3", "4", "5"]):
        draw.text((label_w + j * (size + pad) + size // 2 - 10, 4), head, fill="black")
    for r, (name, tiles) in enumerate(rows):
        y0 = 20 + r * (size + pad)
        draw.text((6, y0 + size // 2 - 6), name, fill="black")
        for j, t in enumerate(tiles):
            a = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(a).resize((size, size), Image.NEAREST), (label_w + j * (size + pad), y0))
    for k, line in enumerate(caption):
        draw.text((6, 20 + len(rows) * (size + pad) + 2 + 14 * k), line, fill="black")
    return canvas, notes


def make_sequence_gallery(image: Image.Image | None = None, suite: str = "cifar10-p", seed: int = 0,
                          columns: int = 8, tile: int | None = None) -> Image.Image:
    """Rows: the -P suite's perturbations (test, then validation); columns: ``columns`` frames spread over each
    sequence, first and last included, labelled with their frame index. The geometric perturbations of
    ImageNet-P and Tiny-ImageNet-P get the resized source image (shorter side ``source_size``), as they warp it
    before the centre crop; the others the suite-size crop."""
    from .perturbations import load_psuite, perturb

    s = load_psuite(suite)
    img = (image or default_image()).convert("RGB")
    crop = fit_to_suite(img, s.image_size, resize_crop=True)
    source = None
    if s.meta.get("source_size"):
        side = int(s.meta["source_size"])
        w, h = img.size
        source = np.asarray(img.resize((max(side, round(w * side / h)), side) if w >= h
                                       else (side, max(side, round(h * side / w))), Image.BILINEAR))
    size = tile or max(s.image_size, 96)
    label_w, pad = 150, 4
    names = s.names("test") + s.names("validation")
    canvas = Image.new("RGB", (label_w + columns * (size + pad), 6 + len(names) * (size + 16 + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        spec = s.perturbations[name]
        a = source if spec.on_source else crop
        frames = perturb(torch.from_numpy(np.array(a)).permute(2, 0, 1)[None], name, suite=suite,
                         seed=seed)[0]
        picks = sorted({round(k * (spec.frames - 1) / (columns - 1)) for k in range(columns)})
        y0 = 6 + r * (size + 16 + pad)
        draw.text((6, y0 + size // 2), f"{name} ({spec.frames})", fill="black")
        for j, i in enumerate(picks):
            tile_img = Image.fromarray(frames[i].permute(1, 2, 0).numpy()).resize((size, size), Image.NEAREST)
            canvas.paste(tile_img, (label_w + j * (size + pad), y0 + 14))
            draw.text((label_w + j * (size + pad) + 2, y0), f"frame {i}", fill="black")
    return canvas
