"""Fidelity against independent references, on real photographs at each suite's native size.

- Deterministic corruptions: PSNR >= 40 dB against the PyPI reference package (ImageNet-C table) and
  against the original scripts' algorithm written in ``reference_impl`` (every suite's table).
- Random corruptions with a replayable draw (glass, motion, snow, frost, elastic): our sampler's
  draws are fed to the reference algorithm; PSNR >= 40 dB.
- Random corruptions, distributionally (noise, fog, and the PyPI reference for glass/motion): the mean
  absolute change and the change in Laplacian energy, averaged over draws, within 10 % / 15 %.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_impl as ref
import torch
from conftest import photo, to_tensor
from scipy import ndimage

from robustbench_augmix.corruptions import REGISTRY, _frost, load_suite
from robustbench_augmix.corruptions._ops import to_uint8
from robustbench_augmix.corruptions._rng import Draws

SUITES = ["imagenet-c", "cifar10-c", "tinyimagenet-c"]
SIZES = {"imagenet-c": 224, "cifar10-c": 32, "tinyimagenet-c": 64}
DETERMINISTIC = ["defocus_blur", "zoom_blur", "brightness", "contrast", "saturate", "pixelate",
                 "jpeg_compression", "gaussian_blur"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ours(name, suite, sev, imgs, seed=0):
    """Our output (uint8 HWC list), the draws our sampler made, and the cell's parameters."""
    s = load_suite(suite)
    p = s.corruptions[name].params(sev, s)
    c = REGISTRY[name]
    x = to_tensor(imgs)
    seeds = [1000 * seed + i for i in range(len(imgs))]
    draws = c.sample(Draws(seeds), x.shape[2], x.shape[3], p) if c.sample else {}
    y = to_uint8(c.apply(x, p, draws)).permute(0, 2, 3, 1).numpy()
    return list(y), draws, p


def args(p, *names):
    return [p[n] for n in names]


@pytest.mark.parametrize("sev", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_matches_reference_package(reference, name, sev):
    imgs = [photo(i, 224) for i in range(3)]
    got, _, _ = ours(name, "imagenet-c", sev, imgs)
    for img, y in zip(imgs, got, strict=True):
        want = reference.corrupt(img, severity=sev, corruption_name=name)
        assert psnr(y, want) >= 40, (name, sev, psnr(y, want))


_DET_ARGS = {
    "defocus_blur": ("radius", "alias_blur"), "zoom_blur": ("start", "stop", "step"),
    "brightness": ("shift",), "contrast": ("factor",), "saturate": ("factor", "shift"),
    "pixelate": ("factor",), "jpeg_compression": ("quality",), "gaussian_blur": ("sigma",),
}


@pytest.mark.parametrize("sev", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("suite", SUITES)
def test_deterministic_matches_original_algorithm(suite, name, sev):
    imgs = [photo(i, SIZES[suite]) for i in range(3)]
    got, _, p = ours(name, suite, sev, imgs)
    for img, y in zip(imgs, got, strict=True):
        want = getattr(ref, name)(img, *args(p, *_DET_ARGS[name]))
        assert psnr(y, want) >= 40, (suite, name, sev, psnr(y, want))


def _motion_port():
    from imagecorruptions.corruptions import _motion_blur  # the ImageMagick MotionBlurImage port

    return _motion_blur


_SNOW = ("loc", "scale", "zoom", "threshold", "blur_radius", "blur_sigma", "blend")

# corruption -> (images per suite, reference call replaying image i's draws d with cell parameters p)
REPLAY = {
    "glass_blur": (lambda suite: 1 if suite == "imagenet-c" else 3,
                   lambda img, d, p, i: ref.glass_blur(img, p.sigma, p.max_delta, p.iterations,
                                                       d["offsets"][i].numpy())),
    "motion_blur": (lambda suite: 3,
                    lambda img, d, p, i: ref.motion_blur(img, p.radius, p.sigma, float(d["angle"][i]),
                                                         _motion_port())),
    "snow": (lambda suite: 3,
             lambda img, d, p, i: ref.snow(img, *args(p, *_SNOW), d["flakes"][i, 0].double().numpy(),
                                           float(d["angle"][i]), _motion_port())),
    # OpenCV decodes the JPEG textures and resizes in fixed point: up to 1-2 levels apart there.
    "frost": (lambda suite: 4,
              lambda img, d, p, i: ref.frost(img, p.image_weight, p.frost_weight, p.texture_scale,
                                             _frost.frost_dir(download=False) / _frost.USED[int(d["texture"][i])],
                                             *d["start"][i].tolist())),
    "spatter": (lambda suite: 3,
                lambda img, d, p, i: ref.spatter(img, *args(p, "loc", "scale", "sigma", "threshold", "intensity",
                                                             "mode"), d["liquid"][i, 0].double().numpy())),
    "elastic_transform": (lambda suite: 3,
                          lambda img, d, p, i: ref.elastic_transform(img, p.alpha, p.sigma, p.affine,
                                                                     d["jitter"][i].numpy(), d["dx"][i].numpy(),
                                                                     d["dy"][i].numpy())),
}


@pytest.mark.parametrize("sev", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("name", sorted(REPLAY))
def test_random_corruption_replayed(reference, name, suite, sev):
    """Our sampler's draws, fed to the reference algorithm, give our output (>= 40 dB)."""
    count, want_fn = REPLAY[name]
    imgs = [photo(i, SIZES[suite]) for i in range(count(suite))]
    got, d, p = ours(name, suite, sev, imgs)
    for i, (img, y) in enumerate(zip(imgs, got, strict=True)):
        want = want_fn(img, d, p, i)
        assert psnr(y, want) >= 40, (name, suite, sev, psnr(y, want))


# ------------------------------------------------------------------------------ distributions


def _stats(clean: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    c, o = clean.astype(np.float64), out.astype(np.float64)

    def hf(a):
        return float(np.mean(np.stack([ndimage.laplace(a[..., k]) for k in range(3)]) ** 2))

    return float(np.mean(np.abs(o - c))), hf(o) - hf(c)


def _compare(pairs_ours, pairs_ref, label):
    mo, ho = np.mean([_stats(c, o) for c, o in pairs_ours], axis=0)
    mr, hr = np.mean([_stats(c, o) for c, o in pairs_ref], axis=0)
    assert abs(mo - mr) <= 0.10 * abs(mr), (label, "mean |change|", mo, mr)
    assert abs(ho - hr) <= 0.15 * abs(hr), (label, "Laplacian energy change", ho, hr)


NOISE = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]


@pytest.mark.parametrize("sev", [1, 3, 5])
@pytest.mark.parametrize("name", NOISE + ["fog", "glass_blur", "motion_blur", "spatter"])
def test_distribution_matches_reference_package(reference, name, sev):
    imgs = [photo(i, 224) for i in range(3)]
    draws = 4 if name != "glass_blur" else 1
    np.random.seed(1234)  # noqa: NPY002 - the reference package draws from NumPy's global RNG
    pairs_ours, pairs_ref = [], []
    for k in range(draws):
        got, _, _ = ours(name, "imagenet-c", sev, imgs, seed=k + 1)
        pairs_ours += list(zip(imgs, got, strict=True))
        pairs_ref += [(img, reference.corrupt(img, severity=sev, corruption_name=name)) for img in imgs]
    _compare(pairs_ours, pairs_ref, (name, sev))


@pytest.mark.parametrize("sev", [1, 3, 5])
@pytest.mark.parametrize("name", NOISE + ["fog"])
@pytest.mark.parametrize("suite", ["cifar10-c", "tinyimagenet-c"])
def test_distribution_matches_original_algorithm(suite, name, sev):
    size = SIZES[suite]
    imgs = [photo(i, size) for i in range(5)]
    rng = np.random.default_rng(99)
    pairs_ours, pairs_ref = [], []
    for k in range(8):
        got, _, p = ours(name, suite, sev, imgs, seed=k + 1)
        pairs_ours += list(zip(imgs, got, strict=True))
        for img in imgs:
            if name == "fog":
                want = ref.fog(img, p.thickness, p.wibble_decay, int(p.mapsize), rng)
            else:
                want = ref.noise(name, img, p, rng)
            pairs_ref.append((img, want))
    _compare(pairs_ours, pairs_ref, (suite, name, sev))


def test_plasma_fractal_is_periodic_and_normalised():
    from robustbench_augmix.corruptions._ops import plasma_fractal

    m = plasma_fractal(Draws([1, 2]), 32, 2.0)
    assert m.shape == (2, 32, 32)
    assert torch.allclose(m.amin(dim=(1, 2)), torch.zeros(2, dtype=m.dtype))
    assert torch.allclose(m.amax(dim=(1, 2)), torch.ones(2, dtype=m.dtype))


def _plasma_textbook(gen: torch.Generator, m: int, decay: float) -> torch.Tensor:
    """The reference's plasma_fractal (IN l. 182-228) written as it reads, np.roll and one draw per step, with
    the draws from one image's generator: what ours must give bit for bit."""
    a = torch.zeros((m, m), dtype=torch.float64)
    step, wibble = m, 100.0

    def wibbled(t):
        return t / 4 + wibble * (wibble * (2 * torch.rand(t.shape, generator=gen, dtype=torch.float64) - 1))

    while step >= 2:
        half = step // 2
        ul = a[0:m:step, 0:m:step]
        sq = ul + torch.roll(ul, -1, 0)
        a[half:m:step, half:m:step] = wibbled(sq + torch.roll(sq, -1, 1))
        dr, ul = a[half:m:step, half:m:step], a[0:m:step, 0:m:step]
        a[0:m:step, half:m:step] = wibbled((dr + torch.roll(dr, 1, 0)) + (ul + torch.roll(ul, -1, 1)))
        a[half:m:step, 0:m:step] = wibbled((dr + torch.roll(dr, 1, 1)) + (ul + torch.roll(ul, -1, 0)))
        step //= 2
        wibble /= decay
    a = a - a.min()
    return a / a.max()


@pytest.mark.parametrize("m, decay", [(2, 2.0), (32, 1.5), (256, 3.0)])
def test_plasma_fractal_equals_the_textbook_loop_bit_for_bit(m, decay):
    """Ours draws an image's noise for every step in one call and sums slices instead of rolled copies; the
    result must be the step-by-step loop's exactly (torch's CPU uniform fills element after element)."""
    from robustbench_augmix.corruptions._ops import plasma_fractal

    seeds = [11, 12, 13]
    ours = plasma_fractal(Draws(seeds), m, decay)
    for i, s in enumerate(seeds):
        assert torch.equal(ours[i], _plasma_textbook(torch.Generator().manual_seed(s), m, decay)), (m, decay, i)


@pytest.mark.parametrize("tv", [True, False], ids=["torchvision-codec", "pil-fallback"])
@pytest.mark.parametrize("suite", SUITES)
def test_jpeg_equals_pil_roundtrip_exactly(suite, tv, monkeypatch):
    """JPEG is a real codec run: whichever backend runs it, every table quality gives PIL's pixels."""
    import io

    from PIL import Image

    from robustbench_augmix.corruptions import digital

    if tv and not digital._torchvision_codec_matches_pil():
        pytest.skip("torchvision's libjpeg differs from PIL's on this install; PIL is used")
    monkeypatch.setattr(digital, "_torchvision_codec_matches_pil", lambda: tv)
    from robustbench_augmix.corruptions import apply

    imgs = [photo(i, SIZES[suite]) for i in range(3)]
    u8 = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    s = load_suite(suite)
    for sev in (1, 2, 3, 4, 5):
        q = int(s.corruptions["jpeg_compression"].params(sev, s).quality)
        got, _, _ = ours("jpeg_compression", suite, sev, imgs)
        # uint8 input takes the 8-bit kernel (no float round trip): Pillow's pixels as well.
        eight = apply(u8, "jpeg_compression", sev, suite=suite, seeds=range(3), levels=True).permute(0, 2, 3, 1).numpy()
        for img, y, z in zip(imgs, got, eight, strict=True):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=q)
            want = np.asarray(Image.open(buf).convert("RGB"))
            np.testing.assert_array_equal(y, want, err_msg=f"float input, q={q}")
            np.testing.assert_array_equal(z, want, err_msg=f"uint8 input, q={q}")


@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "chunk-per-image"])
@pytest.mark.parametrize("suite", SUITES)
def test_pixelate_equals_pillow_box_exactly(suite, chunked, monkeypatch):
    """Pixelate is two Pillow BOX resizes (IN l. 529-535): the kernel gives Pillow's pixels at every
    severity, on float and on uint8 input, whether the CPU batch goes in one chunk or several."""
    from PIL import Image

    from robustbench_augmix.corruptions import apply, digital

    if chunked:
        monkeypatch.setattr(digital, "_PIXELATE_CHUNK", 1)
    imgs = [photo(i, SIZES[suite]) for i in range(3)]
    u8 = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    s = load_suite(suite)
    for sev in (1, 2, 3, 4, 5):
        f = s.corruptions["pixelate"].params(sev, s).factor
        got, _, _ = ours("pixelate", suite, sev, imgs)
        eight = apply(u8, "pixelate", sev, suite=suite, seeds=range(3), levels=True).permute(0, 2, 3, 1).numpy()
        for img, y, z in zip(imgs, got, eight, strict=True):
            h, w = img.shape[:2]
            small = Image.fromarray(img).resize((int(w * f), int(h * f)), Image.BOX)
            want = np.asarray(small.resize((w, h), Image.BOX))
            np.testing.assert_array_equal(y, want, err_msg=f"float input, factor {f}")
            np.testing.assert_array_equal(z, want, err_msg=f"uint8 input, factor {f}")


@pytest.mark.parametrize("size", [(37, 50), (61, 19), (100, 100), (231, 224)])
def test_pixelate_equals_pillow_box_at_any_size(size):
    """Off a suite's native size the box widths and the up-sampling taps change (torch's nearest
    modes pick other pixels than Pillow's BOX at some sizes): still Pillow's pixels, every factor.

    Pillow's resize is a horizontal pass, rounding to 8 bits, then a vertical pass: always so up to
    Pillow 12 (and when ImageNet-C was made), while Pillow 13 runs the vertical pass first for some
    non-square reductions. We keep the classic order, so the reference here is Pillow one axis at a
    time (each single-axis resize is one pass, the same in every version)."""
    from PIL import Image

    from robustbench_augmix.corruptions import apply

    def box(a, w, h):
        return Image.fromarray(a).resize((w, a.shape[0]), Image.BOX).resize((w, h), Image.BOX)

    h, w = size
    img = photo(0, max(size))[:h, :w]
    u8 = torch.from_numpy(img.copy()).permute(2, 0, 1).unsqueeze(0).contiguous()
    for suite in SUITES:
        s = load_suite(suite)
        for sev in (1, 3, 5):
            f = s.corruptions["pixelate"].params(sev, s).factor
            got = apply(u8, "pixelate", sev, suite=suite, seeds=[0], levels=True)[0].permute(1, 2, 0).numpy()
            want = np.asarray(box(np.asarray(box(img, int(w * f), int(h * f))), w, h))
            np.testing.assert_array_equal(got, want, err_msg=f"{suite} severity {sev} at {h}x{w}")
            if h == w:  # square: Pillow's own two-pass resize agrees in every version
                small = Image.fromarray(img).resize((int(w * f), int(h * f)), Image.BOX)
                np.testing.assert_array_equal(got, np.asarray(small.resize((w, h), Image.BOX)))


@pytest.mark.parametrize("sev", [1, 2, 3])
def test_spatter_canny_and_chamfer_match_opencv(sev):
    """The two OpenCV steps of the water spatter, each against cv2 on the liquid layers the script
    makes (IN l. 438-445): Canny edges exactly; the capped L2 5x5 chamfer distance to float32 rounding
    (our relaxation sums the same moves in a different order than IPP's two raster passes)."""
    cv2 = pytest.importorskip("cv2")
    from robustbench_augmix.corruptions._ops import gaussian_filter
    from robustbench_augmix.corruptions.weather import canny_u8, chamfer_distance_l2_5

    p = load_suite("imagenet-c").corruptions["spatter"].params(sev, load_suite("imagenet-c"))
    normal = torch.randn(12, 1, 224, 224, generator=torch.Generator().manual_seed(sev), dtype=torch.float64)
    layer = gaussian_filter(p.loc + p.scale * normal, float(p.sigma), mode="edge")
    layer = torch.where(layer < p.threshold, torch.zeros_like(layer), layer)
    l8 = torch.remainder(torch.floor(layer * 255), 256)
    edges = canny_u8(l8, 50, 150)
    dist = chamfer_distance_l2_5(edges, 20.0)
    for i in range(len(l8)):
        want = cv2.Canny(l8[i, 0].numpy().astype(np.uint8), 50, 150)
        np.testing.assert_array_equal(edges[i, 0].numpy(), want > 0)
        d = np.minimum(cv2.distanceTransform(255 - want, cv2.DIST_L2, 5), 20)
        np.testing.assert_allclose(dist[i, 0].numpy(), d, rtol=0, atol=4e-6)
    assert edges.any() and (dist > 0).any() and (dist < 20).any()


@pytest.mark.parametrize("sigma", [0.8, 2.44, 7.0, 40.0])
@pytest.mark.parametrize("mode", ["edge", "symmetric"])
def test_gaussian_filter_matches_scipy_in_bands_and_dense(sigma, mode):
    """The CPU Gaussian filter runs narrow kernels as one product per band of rows (_ops._band_blocks) and
    wide ones densely; both against scipy's own filter, on a non-square float64 and float32 batch."""
    from robustbench_augmix.corruptions._ops import _band_blocks, _gaussian_matrix, gaussian_filter

    x = np.random.default_rng(3).uniform(-1, 1, size=(2, 3, 200, 224))
    scipy_mode = {"edge": "nearest", "symmetric": "reflect"}[mode]
    want = ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode=scipy_mode, truncate=3.0)
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        got = gaussian_filter(torch.from_numpy(x).to(dtype), sigma, mode, truncate=3.0)
        np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=atol)
    for n in (200, 224):
        m = _gaussian_matrix(n, sigma, 3.0, mode)
        covered = np.zeros_like(m, dtype=bool)
        for r0, r1, k0, k1 in _band_blocks(n, sigma, 3.0, mode):
            covered[r0:r1, k0:k1] = True
        assert not m[~covered].any() and covered.any(axis=1).all()
    assert len(_band_blocks(224, 0.8, 3.0, "edge")) > 1 and len(_band_blocks(224, 40.0, 3.0, "edge")) == 1
