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


# ------------------------------------------------------------------------------ the batched path
from robustbench_augmix.augmix.batched import apply_op_batch, augmix_batch, encode_draws  # noqa: E402
from robustbench_augmix.augmix.mixing import OPS, draw_mix, mix_pil  # noqa: E402


def _batch(size):
    imgs = [photo(i % 5, size) for i in range(6)]
    imgs[3] = (imgs[3] // 64 * 64).astype(np.uint8)       # four grey levels: equalize/autocontrast edge cases
    imgs[4] = np.full_like(imgs[4], 77)                    # constant: autocontrast/equalize leave it alone
    imgs[5] = np.ascontiguousarray(imgs[5][: size // 2])   # not square
    return imgs


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("op", DEFAULT_OPS + EXTRA_OPS)
def test_every_op_on_tensors_matches_pil(op, severity, size):
    rng = np.random.default_rng(severity)
    for group in ([a for a in _batch(size) if a.shape[0] == size], [_batch(size)[5]]):
        draws = [sample_op(rng, (op,), severity) for _ in group]
        ref = np.stack([np.asarray(apply_op(Image.fromarray(a), d))
                        for a, d in zip(group, draws, strict=True)]).astype(int)
        x = torch.from_numpy(np.stack(group)).permute(0, 3, 1, 2).float()
        out = apply_op_batch(x, op, torch.tensor([d.level for d in draws], dtype=torch.float64),
                             torch.tensor([d.sign for d in draws]))
        got = out.permute(0, 2, 3, 1).numpy().astype(int)
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("op", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
def test_geometric_ops_match_pil_at_odd_sizes(op):
    """Pillow's bilinear arithmetic exactly (values a hair below an integer truncate as Pillow does): 60
    random levels and signs on non-square odd sizes, against Pillow on each image."""
    rng = np.random.default_rng(11)
    for h, w in ((33, 37), (61, 19), (45, 45)):
        group = [np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR)) for a in _batch(64)[:4]] * 15
        draws = [sample_op(rng, (op,), 3.0) for _ in group]
        ref = np.stack([np.asarray(apply_op(Image.fromarray(a), d)) for a, d in zip(group, draws, strict=True)])
        x = torch.from_numpy(np.stack(group)).permute(0, 3, 1, 2).double()
        out = apply_op_batch(x, op, torch.tensor([d.level for d in draws], dtype=torch.float64),
                             torch.tensor([d.sign for d in draws]))
        assert np.array_equal(out.permute(0, 2, 3, 1).numpy().astype(np.uint8), ref), (h, w)


def test_draws_are_valid_and_uniform():
    rng = np.random.default_rng(0)
    draws = [draw_mix(rng, severity=3) for _ in range(3000)]
    ws = np.stack([d.ws for d in draws])
    assert np.allclose(ws.sum(1), 1, atol=1e-6) and (ws >= 0).all()
    assert all(0 <= d.m <= 1 for d in draws)
    depths = np.concatenate([(d.op >= 0).sum(1) for d in draws])
    assert set(depths) == {1, 2, 3} and np.allclose(np.bincount(depths)[1:] / len(depths), 1 / 3, atol=0.02)
    # Ops fill the chain from the front, uniform over the 9 default ops; levels in [0.1, 3); signs +-1.
    ops = np.concatenate([d.op[d.op >= 0] for d in draws])
    assert all((d.op[:, 1:] < 0).sum() >= (d.op[:, :1] < 0).sum() for d in draws)
    assert ops.max() == len(DEFAULT_OPS) - 1
    assert np.allclose(np.bincount(ops) / len(ops), 1 / 9, atol=0.01)
    lv = np.concatenate([d.level[d.op >= 0] for d in draws])
    assert lv.min() >= 0.1 and lv.max() < 3 and abs(lv.mean() - 1.55) < 0.03
    signs = np.concatenate([d.sign[d.op >= 0] for d in draws])
    assert set(signs) == {-1, 1} and abs(signs.mean()) < 0.03
    assert draw_mix(np.random.default_rng(1), all_ops=True, depth=2).op.max() < len(OPS)
    assert ((draw_mix(np.random.default_rng(1), depth=2).op >= 0).sum(1) == 2).all()


@pytest.mark.parametrize("size", [32, 64])
def test_batched_views_equal_the_per_image_views_for_the_same_draws(size):
    import torchvision.transforms as T

    pre = T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    imgs = [photo(i % 5, size) for i in range(12)]
    draws = [[draw_mix(np.random.default_rng(100 + i)) for _ in range(2)] for i in range(len(imgs))]
    enc = torch.utils.data.default_collate([encode_draws(d, 3) for d in draws])
    clean, v1, v2 = augmix_batch(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2), enc, [0.5] * 3, [0.5] * 3)
    for i, a in enumerate(imgs):
        ref = [mix_pil(Image.fromarray(a), d, pre) for d in draws[i]]
        assert torch.allclose(clean[i], pre(Image.fromarray(a)), atol=1e-6)
        for got, want in zip((v1[i], v2[i]), ref, strict=True):
            # the same pixels; only the order of the float mixing differs (after Normalize vs before it)
            assert (got - want).abs().max() < 1e-5


def test_batched_chains_are_independent_across_the_batch():
    img = photo(0, 32)
    x = torch.from_numpy(np.stack([img] * 16)).permute(0, 3, 1, 2)
    enc = torch.utils.data.default_collate([encode_draws([draw_mix(np.random.default_rng(i))], 3) for i in range(16)])
    _, view = augmix_batch(x, enc, [0.5] * 3, [0.5] * 3)
    flat = view.reshape(16, -1)
    assert len({tuple(np.round(r.numpy()[:200], 4)) for r in flat}) == 16  # no two images share a chain


def test_dataset_paths_share_their_draws():
    import torchvision.transforms as T

    from robustbench_augmix.data.sources import ArraySource
    from robustbench_augmix.data.training import TrainSet

    pre = T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    src = ArraySource(np.stack([photo(i, 32) for i in range(5)]), np.arange(5))
    per_image = AugMixDataset(TrainSet(src, "pad_crop_flip", 32, seed=3), pre, seed=3)
    batched = AugMixDataset(TrainSet(src, "pad_crop_flip", 32, seed=3), seed=3, batched=True)
    for ds in (per_image, batched):
        ds.set_epoch(2)
    x, enc, y = torch.utils.data.default_collate([batched[i] for i in range(5)])
    views = augmix_batch(x, enc, [0.5] * 3, [0.5] * 3)
    for i in range(5):
        ref, yi = per_image[i]
        assert yi == int(y[i]) == i
        for got, want in zip(views, ref, strict=True):
            assert (got[i] - want).abs().max() < 1e-5
