"""AugMix operations against the release's definitions re-derived here with PIL, the mixing's convexity,
keyed determinism, and the JSD loss against timm's JsdCrossEntropy and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo
from PIL import Image, ImageEnhance, ImageOps

from robustbench_augmix.augmix import (
    DEFAULT_OPS,
    EXTRA_OPS,
    AugMixDataset,
    OpDraw,
    apply_op,
    augment_and_mix,
    jsd_loss,
    magnitude,
    sample_op,
)
from robustbench_augmix.augmix.mixing import sample_key


def release_op(img: Image.Image, op: str, level: float, sign: int) -> Image.Image:
    """augmentations.py's ops (l.56-138) for a given level and sign, canvas = the image's size."""
    size = img.size[0]
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "posterize":
        return ImageOps.posterize(img, 4 - int(level * 4 / 10))
    if op == "rotate":
        return img.rotate(sign * int(level * 30 / 10), resample=Image.BILINEAR)
    if op == "solarize":
        return ImageOps.solarize(img, 256 - int(level * 256 / 10))
    aff = {"shear_x": (1, sign * level * 0.3 / 10, 0, 0, 1, 0), "shear_y": (1, 0, 0, sign * level * 0.3 / 10, 1, 0),
           "translate_x": (1, 0, sign * int(level * (size / 3) / 10), 0, 1, 0),
           "translate_y": (1, 0, 0, 0, 1, sign * int(level * (size / 3) / 10))}
    if op in aff:
        return img.transform((size, size), Image.AFFINE, aff[op], resample=Image.BILINEAR)
    enh = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast, "brightness": ImageEnhance.Brightness,
           "sharpness": ImageEnhance.Sharpness}[op]
    return enh(img).enhance(level * 1.8 / 10 + 0.1)


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("op", DEFAULT_OPS + EXTRA_OPS)
def test_every_op_matches_the_release(op, severity, size):
    img = Image.fromarray(photo(1, size))
    rng = np.random.default_rng(severity)
    for _ in range(3):
        d = sample_op(rng, (op,), severity)
        assert 0.1 <= d.level < severity and d.sign in (-1, 1)
        out = apply_op(img, d)
        assert out.size == img.size and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(release_op(img, op, d.level, d.sign)))


def test_magnitudes_at_the_cifar_severity():
    # augmix.md 1.1, at severity 3: posterize 4 or 3 bits, rotate 0..8 degrees, solarize 180..254,
    # |shear| < 0.09, translate 0..3 px at 32 px, enhance factors in [0.118, 0.64).
    levels = np.linspace(0.1, 2.9999, 200)
    assert {magnitude("posterize", v, 32) for v in levels} == {4, 3}
    assert {magnitude("rotate", v, 32) for v in levels} == set(range(0, 9))
    sol = [magnitude("solarize", v, 32) for v in levels]
    assert min(sol) >= 180 and max(sol) <= 254
    assert max(magnitude("shear_x", v, 32) for v in levels) < 0.09
    assert {magnitude("translate_x", v, 32) for v in levels} == {0, 1, 2, 3}
    assert magnitude("translate_x", 1.0, 224) == 7 and magnitude("color", 0.1, 32) == pytest.approx(0.118)
    with pytest.raises(ValueError, match="unknown AugMix operation"):
        apply_op(Image.new("RGB", (8, 8)), OpDraw("cutout", 1.0, 1))


def test_mixing_is_convex_and_keyed():
    img = Image.fromarray(photo(0, 32))
    const = torch.full((3, 32, 32), 0.37)
    # Whatever the chains do, a preprocess with a constant output gives that constant back iff the chain
    # weights sum to one and the skip weight is convex.
    for s in range(5):
        out = augment_and_mix(img, np.random.default_rng(s), lambda im: const.clone())
        assert torch.allclose(out, const, atol=1e-6)

    def pre(im):
        return torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)

    a = augment_and_mix(img, sample_key(0, 1, 5), pre)
    assert torch.equal(a, augment_and_mix(img, sample_key(0, 1, 5), pre))
    assert not torch.equal(a, augment_and_mix(img, sample_key(0, 2, 5), pre))
    assert a.min() >= 0 and a.max() <= 1

    base = [(img, 3), (Image.fromarray(photo(2, 32)), 7)]
    ds = AugMixDataset(base, pre, seed=4)
    (clean, v1, v2), y = ds[1]
    assert y == 7 and torch.equal(clean, pre(base[1][0])) and not torch.equal(v1, v2)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0][1], v1)
    ds.set_epoch(0)
    assert torch.equal(ds[1][0][1], v1)


def test_jsd_equals_timm_and_a_hand_case():
    from timm.loss import JsdCrossEntropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3 * 8, 10, generator=g) * 3
    target = torch.randint(0, 10, (8,), generator=g)
    ours = jsd_loss(logits, target)
    theirs = JsdCrossEntropy(num_splits=3, alpha=12, smoothing=0.0)(logits, target)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
    # Identical views: JS = 0, the loss is the clean cross-entropy.
    same = torch.cat([logits[:8]] * 3)
    assert float(jsd_loss(same, target)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits[:8], target)),
                                                           rel=1e-6)
    # Two one-hot-like views on different classes: JS of (p, p, q) by hand, p = (1, 0), q = (0, 1).
    big = 60.0
    lg = torch.tensor([[big, 0.0], [big, 0.0], [0.0, big]])
    # M = (2/3, 1/3); KL(p || M) = log 1.5 twice, KL(q || M) = log 3; the clean CE is ~0.
    js = (2 * np.log(1.5) + np.log(3.0)) / 3
    assert float(jsd_loss(lg, torch.tensor([0]), lam=1.0)) == pytest.approx(js, rel=1e-4)
    with pytest.raises(ValueError, match="multiple of 3"):
        jsd_loss(logits[:7], target)
