"""The -P suites: their tables against the reference study (frame counts, test lists, the CIFAR mean-FP list),
the sequence kernels over every suite and generated perturbation (shape, clean frame 0, keyed frames), the
deterministic frames against the reference algorithm re-implemented here (skimage), and the noise
sequences' distributions against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo

import robustbench_augmix as rba
from robustbench_augmix.perturbations import load_psuite, perturb, psuites

SIZES = {"cifar10-p": 32, "cifar100-p": 32, "tinyimagenet-p": 64, "imagenet-p": 224}
CELLS = [(s, n) for s in psuites() for n in load_psuite(s).generated()]


def _photos(size: int, n: int = 3) -> torch.Tensor:
    return torch.from_numpy(np.stack([photo(i, size) for i in range(n)])).permute(0, 3, 1, 2).contiguous()


def test_the_tables_follow_the_reference_study():
    """shared/reference/perturbations.md: 10 test and 4 validation perturbations; 31 frames except ImageNet's
    translate (41) and CIFAR's motion blur (21) and translate (16); noise sequences compared with frame 0;
    CIFAR's mean FP over the cifar-p-eval.py list, spatter in place of snow; -C listings unchanged."""
    test = ["gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness", "translate", "rotate",
            "tilt", "scale"]
    assert psuites() == sorted(SIZES) and rba.suites() == ["cifar10-c", "cifar100-c", "imagenet-c", "tinyimagenet-c"]
    for sid, size in SIZES.items():
        s = load_psuite(sid)
        assert s.image_size == size and s.names("test") == test
        assert s.names("validation") == ["speckle_noise", "gaussian_blur", "spatter", "shear"]
        frames = {n: p.frames for n, p in s.perturbations.items()}
        special = {"imagenet-p": {"translate": 41}, "cifar10-p": {"motion_blur": 21, "translate": 16},
                   "cifar100-p": {"motion_blur": 21, "translate": 16}}.get(sid, {})
        assert frames == {n: special.get(n, 31) for n in frames}
        assert [n for n, p in s.perturbations.items() if p.noise] == ["gaussian_noise", "shot_noise", "speckle_noise"]
    assert load_psuite("cifar10-p").mean_fp == (*test[:4], "spatter", *test[5:])
    assert load_psuite("cifar100-p").perturbations == load_psuite("cifar10-p").perturbations
    assert load_psuite("imagenet-p").mean_fp == ()
    # the noise levels of the three difficulties (the reference's <name>, <name>_2, <name>_3 data sets)
    assert load_psuite("cifar10-p").perturbations["shot_noise"].difficulty == ((700,), (400,), (200,))
    assert load_psuite("imagenet-p").perturbations["gaussian_noise"].difficulty == ((0.03,), (0.05,), (0.08,))


def _source_photos(suite, n: int = 3) -> torch.Tensor:
    """Photographs as ImageNet-P's / Tiny-ImageNet-P's geometric perturbations take them: the resized source,
    shorter side ``source_size``, here wider than high (so the centre crop's arithmetic is exercised)."""
    from PIL import Image

    side = int(load_psuite(suite).meta["source_size"])
    return torch.from_numpy(np.stack([np.asarray(Image.fromarray(photo(i, 2 * side)).resize((side + 37, side)))
                                      for i in range(n)])).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("suite,name", CELLS)
def test_every_generated_perturbation_makes_keyed_sequences(suite, name):
    s = load_psuite(suite)
    spec = s.perturbations[name]
    x = _source_photos(suite) if spec.on_source else _photos(s.image_size)
    v = perturb(x, name, suite=suite, seed=3, index=[5, 6, 7])
    assert v.shape == (3, spec.frames, 3, s.image_size, s.image_size) and v.dtype == torch.uint8
    if spec.noise:
        assert torch.equal(v[:, 0], x)                                  # the clean reference frame
        assert not torch.equal(v[:, 1], v[:, 2])                        # independent draws per frame
    # a sequence depends on its image's index, not on the batch it is made in
    assert torch.equal(perturb(x[1:2], name, suite=suite, seed=3, index=[6]), v[1:2])
    assert torch.equal(perturb(x, name, suite=suite, seed=3, index=[5, 6, 7]), v)
    other = perturb(x, name, suite=suite, seed=4, index=[5, 6, 7])
    random = spec.noise or spec.sequence_draws                          # noise per frame, snow's layer per sequence
    assert torch.equal(other, v) != random                              # only random draws depend on the seed


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("suite", sorted(SIZES))
def test_brightness_frames_match_the_reference_algorithm(suite):
    """make_*_p.py's brightness, re-implemented with skimage as the scripts run it: x / 255, rgb2hsv,
    V <- clip(V + c), hsv2rgb, uint8(255 clip(x)); c = slope (i - 15) per frame. PSNR >= 40 dB per frame."""
    sk = pytest.importorskip("skimage.color")
    s = load_psuite(suite)
    slope = 0.015 if suite.startswith("cifar") else 0.02         # make_cifar_p.py l.177-185; make_imagenet_p.py
    x = _photos(s.image_size)
    v = perturb(x, "brightness", suite=suite).permute(0, 1, 3, 4, 2).numpy()
    worst = np.inf
    for k in range(len(x)):
        img = x[k].permute(1, 2, 0).numpy() / 255.0
        for i in range(31):
            hsv = sk.rgb2hsv(img)
            hsv[:, :, 2] = np.clip(hsv[:, :, 2] + slope * (i - 15), 0, 1)
            want = np.uint8(np.clip(sk.hsv2rgb(hsv), 0, 1) * 255)
            worst = min(worst, _psnr(v[k, i], want))
            assert np.abs(v[k, i].astype(int) - want).max() <= 1, (k, i)
    assert worst >= 40


@pytest.mark.parametrize("suite", sorted(SIZES))
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_noise_sequences_have_the_tables_distributions(suite, difficulty):
    """On a flat grey image (level 128): Gaussian frames x + N(0, s), speckle x + x N(0, s), shot Poisson(lam x) / lam,
    each then floored to 8 bits; their per-frame spread matches s (resp. sqrt(x / lam)) within 6 %, and two
    frames' noises are uncorrelated."""
    s = load_psuite(suite)
    size = min(s.image_size, 64)
    x = torch.full((2, 3, size, size), 128, dtype=torch.uint8)
    v0 = 128 / 255
    for name, spread in (("gaussian_noise", lambda p: p.scale), ("speckle_noise", lambda p: v0 * p.scale),
                         ("shot_noise", lambda p: np.sqrt(v0 / p.photons))):
        spec = s.perturbations[name]
        frames = perturb(x, name, suite=suite, difficulty=difficulty).double() / 255 - v0
        noise = frames[:, 1:] + 0.5 / 255                                 # undo the floor's mean shift
        want = spread(spec.params(difficulty, 1, s))
        assert noise.std().item() == pytest.approx(want, rel=0.06), name
        a, b = noise[:, 0].flatten(), noise[:, 1].flatten()
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05, name


def test_bad_requests_are_refused_with_the_choices():
    from robustbench_augmix.perturbations import NotGeneratedYet, UnknownPerturbation

    x = _photos(32, 1)
    with pytest.raises(UnknownPerturbation, match="did you mean 'brightness'.*Accepted: gaussian_noise"):
        perturb(x, "brightnes", suite="cifar10-p")
    import dataclasses

    from robustbench_augmix.perturbations import check_perturbation

    s = load_psuite("cifar10-p")   # every perturbation has a kernel now: a table entry without one, made here
    partial = dataclasses.replace(s, perturbations={**s.perturbations, "rotate": dataclasses.replace(
        s.perturbations["rotate"], kernel="")})
    with pytest.raises(NotGeneratedYet, match="cifar10-p rotate is in the table but not generated yet; generated: "
                                              "gaussian_noise, shot_noise"):
        check_perturbation("rotate", partial)
    with pytest.raises(ValueError, match=r"warps the resized source image \(shorter side 256"):
        perturb(_photos(224, 1), "rotate", suite="imagenet-p")

    with pytest.raises(ValueError, match="difficulty must be 1, 2 or 3"):
        perturb(x, "gaussian_noise", suite="cifar10-p", difficulty=4)
    with pytest.raises(ValueError, match="unknown -P suite 'cifar10-c'"):
        perturb(x, "gaussian_noise", suite="cifar10-c")
    with pytest.raises(ValueError, match="float in \\[0, 1\\]"):
        perturb(x.float(), "gaussian_noise", suite="cifar10-p")


def test_flip_probability_of_a_model_on_sequences():
    """The metric on real sequences: a constant model never flips, a model that reads the brightness flips at
    the frames where the mean level crosses its threshold (counted here by hand from the frames)."""
    from robustbench_augmix.metrics import flip_probability

    x = _photos(32)
    v = perturb(x, "brightness", suite="cifar10-p")
    assert flip_probability(np.zeros((3, 31), int), noise=False) == 0.0
    level = v.float().mean(dim=(2, 3, 4))                                   # (N, T)
    pred = (level > level[:, 15:16]).long().numpy()                        # brighter than the unshifted frame
    flips = (pred[:, 1:] != pred[:, :-1]).sum(1)                           # one step, where the shift turns > 0
    assert flip_probability(pred, noise=False) == pytest.approx(float(np.mean(flips / 30)))
    assert (flips == 1).all()


@pytest.mark.parametrize("suite", ["cifar10-p", "tinyimagenet-p", "imagenet-p"])
def test_blur_frames_match_the_reference_algorithms(suite, reference):
    """Motion blur: ImageMagick's MotionBlurImage as the reference package ports it (imagecorruptions
    ``_motion_blur``), at the frame's angle, floored to 8 bits; Gaussian blur: skimage ``gaussian`` with the
    frame's sigma and the table's truncate, ``uint8(255 x)``. Every frame within one 8-bit level (PSNR >= 40 dB)."""
    import reference_impl as ref
    from imagecorruptions.corruptions import _motion_blur as motion_fn  # importable once the fixture shims it
    from skimage.filters import gaussian

    s = load_psuite(suite)
    x = _photos(s.image_size, 2)
    for name in ("motion_blur", "gaussian_blur"):
        spec = s.perturbations[name]
        v = perturb(x, name, suite=suite).permute(0, 1, 3, 4, 2).numpy()
        for k in range(len(x)):
            img = x[k].permute(1, 2, 0).numpy()
            for i in sorted({0, 1, spec.frames // 2, spec.frames - 1}):
                p = spec.params(1, i, s)
                if name == "motion_blur":
                    want = ref.motion_blur(img, p.radius, p.sigma, p.angle, motion_fn)
                else:
                    g = gaussian(img / 255.0, sigma=p.sigma, truncate=p.truncate, mode="nearest", channel_axis=-1)
                    want = np.uint8(np.clip(g, 0, 1) * 255)
                assert np.abs(v[k, i].astype(int) - want).max() <= 1, (name, k, i)
                assert _psnr(v[k, i], want) >= 40, (name, k, i)


@pytest.mark.parametrize("suite", ["cifar10-p", "cifar100-p"])
def test_translate_frames_match_torchvisions_affine_on_pil(suite):
    """make_cifar_p.py's translate: torchvision's ``affine`` on the PIL image with translate (i - 7, 0) and
    nearest resampling, no crop: every frame equal (a pure translation does not depend on the affine centre)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = _photos(32)
    v = perturb(x, "translate", suite=suite).permute(0, 1, 3, 4, 2).numpy()
    assert v.shape[1] == 16
    for k in range(len(x)):
        img = Image.fromarray(x[k].permute(1, 2, 0).numpy())
        for i in range(16):
            want = np.asarray(TF.affine(img, angle=0.0, translate=[i - 7, 0], scale=1.0, shear=[0.0],
                                        interpolation=InterpolationMode.NEAREST))
            np.testing.assert_array_equal(v[k, i], want, err_msg=f"frame {i}")


@pytest.mark.parametrize("name", ["rotate", "scale"])
def test_rotate_and_scale_frames_match_pillows_affine(name):
    """make_cifar_p.py's rotate (angle i - 15) and scale ((2 i + 70) / 100): torchvision's affine on the PIL
    image with bilinear resampling, i.e. Pillow's AFFINE transform with torchvision's inverse matrix about the
    centre (w / 2 + 0.5, h / 2 + 0.5) of the torchvision the scripts ran (computed here by torchvision's own
    ``_get_inverse_affine_matrix``, the same for rotation and scale in every version). Every frame equal."""
    from PIL import Image
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    x = _photos(32)
    v = perturb(x, name, suite="cifar10-p").permute(0, 1, 3, 4, 2).numpy()
    for i in range(31):
        angle, scale = (i - 15.0, 1.0) if name == "rotate" else (0.0, (2 * i + 70) / 100)
        m = _get_inverse_affine_matrix([16.5, 16.5], angle, [0.0, 0.0], scale, [0.0, 0.0])
        for k in range(len(x)):
            img = Image.fromarray(x[k].permute(1, 2, 0).numpy())
            want = np.asarray(img.transform((32, 32), Image.AFFINE, m, Image.BILINEAR))
            np.testing.assert_array_equal(v[k, i], want, err_msg=f"{name} frame {i}")


def test_frame_expressions_are_arithmetic_only():
    """A table's frame values are the generator's expressions of i; anything but numbers, i and + - * / is
    refused with the table and perturbation named (a table is data, never code)."""
    from robustbench_augmix.perturbations.tables import _evaluate, _expression

    assert _evaluate(_expression("(2 * i + 70) / 100"), 4) == (2 * 4 + 70) / 100
    assert _evaluate(_expression("-(i - 15) * 0.5"), 3) == 6.0
    for bad in ("__import__('os')", "i ** 2", "x + 1", "(i"):
        with pytest.raises(ValueError, match="t.toml: perturbation 'p'"):
            _expression(bad, "t.toml: perturbation 'p' frame v")


def test_zoom_blur_frames_match_the_scripts_running_mean():
    """make_cifar_p.py l.133-144 re-run here with torchvision and Pillow: avg = ToTensor(img); for each i,
    avg += ToTensor(affine(img, scale=1 + 0.004 i, BILINEAR)); frame i = ToPILImage(avg / (i + 1)). Every frame
    equal."""
    from PIL import Image
    from torchvision.transforms import functional as TF
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    x = _photos(32)
    v = perturb(x, "zoom_blur", suite="cifar10-p").permute(0, 1, 3, 4, 2).numpy()
    assert v.shape[1] == 31
    for k in range(len(x)):
        img = Image.fromarray(x[k].permute(1, 2, 0).numpy())
        avg = TF.to_tensor(img)
        np.testing.assert_array_equal(v[k, 0], np.asarray(img))
        for i in range(1, 31):
            m = _get_inverse_affine_matrix([16.5, 16.5], 0.0, [0.0, 0.0], 1 + 0.004 * i, [0.0, 0.0])
            avg += TF.to_tensor(img.transform((32, 32), Image.AFFINE, m, Image.BILINEAR))
            want = np.asarray(TF.to_pil_image(avg / (i + 1)))
            np.testing.assert_array_equal(v[k, i], want, err_msg=f"frame {i}")


class _MeanModel(torch.nn.Module):
    """Logits linear in the pixels: a deterministic classifier whose predictions move with the frames."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 3 * 32 * 32, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def _by_hand(model, frames: np.ndarray, noise: bool) -> tuple[float, float]:
    """FP and T5D of one model on (N, T, H, W, 3) uint8 sequences, computed here with plain loops."""
    from scipy.stats import rankdata

    fps, t5s = [], []
    for seq in frames:
        x = torch.from_numpy(seq).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            z = model(x).double().numpy()
        pairs = [(0, j) for j in range(1, len(z))] if noise else [(j - 1, j) for j in range(1, len(z))]
        fps.append(np.mean([z[a].argmax() != z[b].argmax() for a, b in pairs]))
        dist = []
        for a, b in pairs:
            ra, rb = rankdata(-z[a], method="ordinal"), rankdata(-z[b], method="ordinal")
            top = np.argsort(ra)[:5]
            dist.append(sum(abs(k - min(int(rb[c]) - 1, 5)) for k, c in enumerate(top)))
        t5s.append(np.mean(dist))
    return float(np.mean(fps)), float(np.mean(t5s))


def test_stability_on_the_fly_and_from_the_released_layout(tmp_path):
    """evaluate_stability: FP and T5D per perturbation equal a plain-loop computation on the same frames; the
    CIFAR mean FP averages the generated ones of cifar-p-eval.py's list; the released layout (uint8
    (N, T, 32, 32, 3) per perturbation, written here from our sequences) gives the same numbers read back;
    the model against itself has mFR = mT5D = 1; bad files are refused naming the file and the form."""
    from robustbench_augmix.evaluation.stability import evaluate_stability

    model = _MeanModel()
    x = _photos(32, 5)
    names = ["gaussian_noise", "brightness", "rotate"]
    res = evaluate_stability(model, "cifar10-p", images=x, perturbations=names, seed=2, batch_size=2)
    folder = tmp_path / "CIFAR-10-P"
    folder.mkdir()
    for name in names:
        frames = perturb(x, name, suite="cifar10-p", seed=2, index=list(range(5))).permute(0, 1, 3, 4, 2).numpy()
        np.save(folder / f"{name}.npy", frames)
        fp, t5 = _by_hand(model, frames, noise=name == "gaussian_noise")
        assert res["perturbations"][name]["flip_probability"] == pytest.approx(fp)
        assert res["perturbations"][name]["top5_distance"] == pytest.approx(t5)
    assert res["mean_flip_probability_over"] == names and res["n_sequences"] == 5
    assert res["mean_flip_probability"] == pytest.approx(np.mean([res["perturbations"][n]["flip_probability"]
                                                                  for n in names]))
    assert all(0 < v["flip_probability"] < 1 and v["top5_distance"] > 0 for v in res["perturbations"].values())
    official = evaluate_stability(model, "cifar10-p", official=folder, perturbations=names, batch_size=3)
    assert official["perturbations"] == res["perturbations"]
    base = {k: {n: v[k] for n, v in res["perturbations"].items()} for k in ("flip_probability", "top5_distance")}
    again = evaluate_stability(model, "cifar10-p", images=x, perturbations=names, seed=2, baseline=base)
    assert again["mfr"] == pytest.approx(1.0) and again["mt5d"] == pytest.approx(1.0)
    np.save(folder / "brightness.npy", np.zeros((5, 30, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"brightness.npy holds uint8 \(5, 30, 32, 32, 3\).*\(N, 31, 32, 32, 3\)"):
        evaluate_stability(model, "cifar10-p", official=folder, perturbations=["brightness"])
    with pytest.raises(ValueError, match=r"translate.npy does not exist"):
        evaluate_stability(model, "cifar10-p", official=folder, perturbations=["translate"])


def test_rb_corrupt_writes_the_cifar_p_layout_and_resumes(tmp_path, cifar_root, capsys):
    """rb-corrupt --suite cifar10-p: one uint8 (N, T, 32, 32, 3) file per perturbation and per noise difficulty
    (gaussian_noise, _2, _3), the sequences perturb makes for those images, a manifest with their sha256; a
    rerun finds every file done; evaluate_stability reads them back to the on-the-fly numbers; an unknown or
    not-generated name is refused before anything is written."""
    import hashlib
    import json

    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.evaluation.stability import evaluate_stability

    root, imgs = cifar_root
    out = tmp_path / "CIFAR-10-P"
    args = ["--suite", "cifar10-p", "--data", str(root), "--out", str(out), "--perturbations",
            "brightness,gaussian_noise", "--seed", "1", "--batch-size", "5"]
    assert corrupt_main(args) == 0
    files = sorted(p.name for p in out.glob("*.npy"))
    assert files == ["brightness.npy", "gaussian_noise.npy", "gaussian_noise_2.npy", "gaussian_noise_3.npy"]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    for name, d in (("brightness", 1), ("gaussian_noise", 1), ("gaussian_noise", 3)):
        stem = name if d == 1 else f"{name}_{d}"
        got = np.load(out / f"{stem}.npy")
        want = perturb(x, name, suite="cifar10-p", difficulty=d, seed=1, index=list(range(12)))
        assert got.dtype == np.uint8 and np.array_equal(got, want.permute(0, 1, 3, 4, 2).numpy()), stem
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["suite"] == "cifar10-p" and set(manifest["files"]) == set(files)
    assert manifest["files"]["brightness.npy"] == hashlib.sha256((out / "brightness.npy").read_bytes()).hexdigest()
    capsys.readouterr()
    assert corrupt_main(args) == 0
    assert "│ 0 " in capsys.readouterr().out                       # no unit run again
    model = _MeanModel()
    fly = evaluate_stability(model, "cifar10-p", images=x, perturbations=["brightness", "gaussian_noise"], seed=1,
                             difficulty=3)
    files_ = evaluate_stability(model, "cifar10-p", official=out, perturbations=["brightness", "gaussian_noise"],
                                difficulty=3)
    assert fly["perturbations"] == files_["perturbations"]
    assert corrupt_main([*args[:5], str(tmp_path / "bad"), "--perturbations", "brightnes"]) == 2
    assert "did you mean 'brightness'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert corrupt_main(["--suite", "imagenet-p", "--data", str(root), "--out", str(tmp_path / "bad")]) == 2
    assert "only the CIFAR-P .npy layout" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def _torchvision02_inverse_matrix(center, angle, scale, shear):
    """torchvision 0.2's ``_get_inverse_affine_matrix`` (what the 2019 -P scripts ran), written out here from its
    published formula: M = [cos(a + s), sin(a + s), 0, -sin(a), cos(a), 0] * (1 / scale) / d, with
    d = cos(a + s) cos(a) + sin(a + s) sin(a), then the centre (and no translation) folded in."""
    import math

    a, s = math.radians(angle), math.radians(shear)
    d = math.cos(a + s) * math.cos(a) + math.sin(a + s) * math.sin(a)
    m = [math.cos(a + s), math.sin(a + s), 0, -math.sin(a), math.cos(a), 0]
    m = [(1.0 / scale) / d * v for v in m]
    m[2] += m[0] * -center[0] + m[1] * -center[1] + center[0]
    m[5] += m[3] * -center[0] + m[4] * -center[1] + center[1]
    return m


def test_shear_frames_match_torchvision_02_on_pillow():
    """make_cifar_p.py's shear (i - 15 degrees): Pillow's bilinear AFFINE with torchvision 0.2's matrix.
    Every frame within one 8-bit level (the matrix's float rounding may move a truncation), most equal."""
    from PIL import Image

    x = _photos(32)
    v = perturb(x, "shear", suite="cifar10-p").permute(0, 1, 3, 4, 2).numpy()
    equal = 0
    for i in range(31):
        m = _torchvision02_inverse_matrix((16.5, 16.5), 0.0, 1.0, i - 15.0)
        for k in range(len(x)):
            want = np.asarray(Image.fromarray(x[k].permute(1, 2, 0).numpy()).transform((32, 32), Image.AFFINE, m,
                                                                                         Image.BILINEAR))
            diff = np.abs(v[k, i].astype(int) - want)
            assert diff.max() <= 1, (i, k)
            equal += int(diff.max() == 0)
    assert equal >= 0.9 * 31 * len(x)


def test_rb_bench_perturbations_times_every_generated_perturbation(tmp_path, capsys, reference):
    """One row per generated perturbation with both timings (the script's loop re-created in _reference_p);
    the figures themselves are benchmark results (docs/performance.md), not asserted."""
    import json

    from robustbench_augmix.cli.bench import main as bench_main

    out = tmp_path / "p.json"
    assert bench_main(["perturbations", "--suite", "cifar10-p", "--images", "4", "--min-time", "0.01", "--markdown",
                       "--json", str(out), "--threads", "1"]) == 0
    rows = json.loads(out.read_text())
    assert [r["perturbation"] for r in rows] == load_psuite("cifar10-p").generated()
    assert all(r["ours_ms"] > 0 and r["reference_ms"] > 0 for r in rows)
    assert "| shear | 31 |" in capsys.readouterr().out


def test_the_reference_loops_make_the_frames_we_make():
    """_reference_p (the timing baseline) runs the scripts' loops: for the deterministic perturbations its frames
    are ours, so the benchmark times the same work."""
    from robustbench_augmix import _reference_p

    s = load_psuite("cifar10-p")
    x = _photos(32, 2)
    for name in ("translate", "rotate", "scale", "shear", "tilt", "zoom_blur", "brightness", "gaussian_blur"):
        spec = s.perturbations[name]
        ours = perturb(x, name, suite="cifar10-p").permute(0, 1, 3, 4, 2).numpy()
        ref = _reference_p.frames(name, x[0].permute(1, 2, 0).numpy(), spec.frames,
                                  lambda i, spec=spec: spec.params(1, i, s))
        assert np.abs(np.stack(ref).astype(int) - ours[0]).max() <= 1, name


@pytest.mark.parametrize("photons", [3, 60, 700, 2000])
def test_shot_noise_is_the_exact_inverse_poisson_cdf(photons):
    """The shot-noise sampler (the -C kernel every -P shot frame is) returns, for each uniform u and 8-bit level
    l, the smallest k with CDF(k; l / 255 * photons) >= u: checked against numpy's searchsorted over scipy's CDF
    for every level, with u spread over [0, 1) and piled into the last guide bins (the far tail, where the
    kernel switches from its linear steps to a binary search)."""
    from scipy import stats

    from robustbench_augmix.corruptions.noise import _GUIDE_BINS, shot_noise
    from robustbench_augmix.corruptions.suites import Params

    g = torch.Generator().manual_seed(photons)
    levels = torch.arange(256, dtype=torch.float64).repeat(40)
    u = torch.rand(levels.numel(), generator=g, dtype=torch.float64)
    u[::4] = 1 - torch.rand(u[::4].numel(), generator=g, dtype=torch.float64) / _GUIDE_BINS * 2   # the tail bins
    x = (levels / 255).reshape(1, 1, -1)
    got = shot_noise(x.clone(), Params({"photons": photons}, 32, "t"), {"u": u}).reshape(-1)
    kmax = int(photons + 12 * np.sqrt(photons) + 30)
    cdf = stats.poisson.cdf(np.arange(kmax)[None, :], (np.arange(256) / 255.0 * photons)[:, None])
    cdf[:, -1] = 1.0
    want = np.array([np.searchsorted(cdf[int(lv)], uu, side="left") for lv, uu in zip(levels, u.numpy(), strict=True)])
    np.testing.assert_array_equal(got.numpy(), np.clip(want / photons, 0, 1))


@pytest.mark.parametrize("suite", ["cifar10-p", "tinyimagenet-p", "imagenet-p"])
def test_snow_frames_match_the_script_on_the_same_layer(suite, reference):
    """make_*_p.py's snow: one N(loc, scale) layer per sequence, zoomed, thresholded, stored as an 8-bit PNG; frame
    i motion-blurs it at i * 4 - 150 degrees and adds it twice to the brightened, greyed image. Replayed with the
    layer our frames drew (tests/reference_impl.py's snow on the reference package's ImageMagick port): every
    frame within two 8-bit levels, PSNR >= 40 dB, and the layer the same in every frame."""
    import reference_impl as ref
    from imagecorruptions.corruptions import _motion_blur as motion_fn

    from robustbench_augmix.corruptions import Draws
    from robustbench_augmix.perturbations import sequence_seeds

    s = load_psuite(suite)
    spec = s.perturbations["snow"]
    size = s.image_size
    x = _photos(size, 2)
    v = perturb(x, "snow", suite=suite, seed=5, index=[3, 4]).permute(0, 1, 3, 4, 2).numpy()
    normal = Draws(sequence_seeds(5, suite, "snow", 1, 0, [3, 4])).normal(1, size, size)[:, 0].double().numpy()
    for k in range(2):
        img = x[k].permute(1, 2, 0).numpy()
        for i in sorted({0, 7, spec.frames - 1}):
            p = spec.params(1, i, s)
            want = ref.snow(img, p.loc, p.scale, p.zoom, p.threshold, p.blur_radius, p.blur_sigma, p.blend,
                            normal[k], p.angle, motion_fn)
            assert np.abs(v[k, i].astype(int) - want).max() <= 2, (k, i)
            assert _psnr(v[k, i], want) >= 40, (k, i)


def _script_tilt_matrix(w: int, h: int, degrees: float) -> np.ndarray:
    """The tilt scripts' homography P2 T RX RY P1 (phi = theta = degrees, focal length sqrt(w^2 + h^2))."""
    phi = theta = np.deg2rad(degrees)
    f = np.sqrt(w ** 2 + h ** 2)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0],
                   [0, 0, 0, 1]])
    ry = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0], [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    return p2 @ t @ rx @ ry @ p1


def test_tilt_frames_equal_opencvs_warp_perspective():
    """make_cifar_p.py's tilt (l.208-236): cv2.warpPerspective(img, P2 T RX RY P1, (w, h)) with phi = theta =
    0.75 (i - 15) degrees, the homography built here as the script builds it; OpenCV 4's fixed-point bilinear
    warp (the reference extra pins OpenCV below 5, whose warp differs). Every frame equal."""
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) >= 5:
        pytest.skip(f"OpenCV {cv2.__version__}: its warpPerspective is not the 2019 scripts' "
                    "(pip install 'opencv-python<5')")

    x = _photos(32)
    v = perturb(x, "tilt", suite="cifar10-p").permute(0, 1, 3, 4, 2).numpy()
    for i in range(31):
        mat = _script_tilt_matrix(32, 32, 0.75 * (i - 15))
        for k in range(len(x)):
            want = cv2.warpPerspective(x[k].permute(1, 2, 0).numpy(), mat, (32, 32))
            np.testing.assert_array_equal(v[k, i], want, err_msg=f"frame {i}")


def _script_spatter(img, normal, p, frames):
    """make_*_p.py's spatter block with OpenCV, skimage and NumPy, on a given standard normal field."""
    import cv2
    from skimage.filters import gaussian

    x = cv2.cvtColor(np.array(img, dtype=np.float32) / 255.0, cv2.COLOR_BGR2BGRA)
    layer = gaussian(p.loc + p.scale * normal, sigma=p.sigma)
    layer[layer < p.threshold] = 0
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    out = []
    for _ in range(frames):
        li = (layer * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(li, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, ker), (3, 3)).astype(np.float32)
        m = cv2.cvtColor(li * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= p.intensity
        color = cv2.cvtColor(np.concatenate([c / 255.0 * np.ones_like(m[..., :1]) for c in (175, 238, 238)], axis=2),
                             cv2.COLOR_BGR2BGRA)
        out.append(np.uint8(cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255))
        layer = np.apply_along_axis(lambda col: np.convolve(col, np.array(p.column_kernel), mode="same"), 0, layer)
    return out


@pytest.mark.parametrize("suite", ["cifar10-p", "tinyimagenet-p", "imagenet-p"])
def test_spatter_frames_match_the_script_on_the_same_layer(suite, reference):
    """Spatter: the script re-run (OpenCV's Canny, distance transform, equalisation and filters; the layer running
    down its columns by np.convolve after each frame) on the normal field our sequence drew: PSNR >= 40 dB on
    every frame, and the drops really move (the last frame differs from the first)."""
    from robustbench_augmix.corruptions import Draws
    from robustbench_augmix.perturbations import sequence_seeds

    s = load_psuite(suite)
    spec = s.perturbations["spatter"]
    size = s.image_size
    x = _photos(size, 2)
    v = perturb(x, "spatter", suite=suite, seed=7, index=[0, 1]).permute(0, 1, 3, 4, 2).numpy()
    normal = Draws(sequence_seeds(7, suite, "spatter", 1, 0, [0, 1])).normal(1, size, size)[:, 0].double().numpy()
    frames = spec.frames if size < 224 else 8
    for k in range(2):
        want = _script_spatter(x[k].permute(1, 2, 0).numpy(), normal[k], spec.params(1, 0, s), frames)
        for i in range(frames):
            assert _psnr(v[k, i], want[i]) >= 40, (k, i, _psnr(v[k, i], want[i]))
        assert not np.array_equal(v[k, 0], v[k, frames - 1])


def test_the_cifar_mean_flip_probability_covers_cifar_p_evals_list():
    """Every perturbation of cifar-p-eval.py's list is generated, so evaluate_stability's default computes the
    CIFAR mean FP over all ten of them (spatter in place of snow), each FP a probability."""
    from robustbench_augmix.evaluation.stability import evaluate_stability

    res = evaluate_stability(_MeanModel(), "cifar10-p", images=_photos(32, 2), batch_size=2)
    assert res["mean_flip_probability_over"] == list(load_psuite("cifar10-p").mean_fp)
    assert "snow" not in res["perturbations"] and len(res["perturbations"]) == 10
    assert all(0 <= r["flip_probability"] <= 1 for r in res["perturbations"].values())
    assert res["mean_flip_probability"] == pytest.approx(np.mean([r["flip_probability"]
                                                                  for r in res["perturbations"].values()]))


@pytest.mark.parametrize("suite", ["imagenet-p", "tinyimagenet-p"])
def test_imagenet_geometric_frames_match_the_scripts_on_the_source_image(suite):
    """make_imagenet_p.py / make_tinyimagenet_p.py warp the resized source image (here 256 x 293 and 64 x 101)
    and centre-crop it: translate, rotate, scale and shear as torchvision 0.2's affine on Pillow, zoom blur as the
    script's running mean, then CenterCrop. Every frame equal (shear within one level)."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    s = load_psuite(suite)
    size = s.image_size
    x = _source_photos(suite, 2)
    h, w = x.shape[-2:]
    centre = (w * 0.5 + 0.5, h * 0.5 + 0.5)

    def crop(a):
        return np.asarray(TF.center_crop(Image.fromarray(np.asarray(a)), [size, size]))

    def affine(img, angle=0.0, scale=1.0, shear=0.0, translate=0, resample=Image.BILINEAR):
        if translate:
            return img.transform((w, h), Image.AFFINE, (1, 0, -translate, 0, 1, 0), Image.NEAREST)
        return img.transform((w, h), Image.AFFINE, _torchvision02_inverse_matrix(centre, angle, scale, shear),
                             resample)

    cases = {"translate": lambda img, i: affine(img, translate=i - (20 if suite == "imagenet-p" else 15)),
             "rotate": lambda img, i: affine(img, angle=i - 15.0),
             "scale": lambda img, i: affine(img, scale=(i * 2.5 + 40) / 100.0),
             "shear": lambda img, i: affine(img, shear=i - 15.0)}
    for name, fn in cases.items():
        v = perturb(x, name, suite=suite).permute(0, 1, 3, 4, 2).numpy()
        for k in range(2):
            img = Image.fromarray(x[k].permute(1, 2, 0).numpy())
            for i in sorted({0, 3, 15, s.perturbations[name].frames - 1}):
                diff = np.abs(v[k, i].astype(int) - crop(fn(img, i)))
                assert diff.max() <= (1 if name == "shear" else 0), (name, k, i)
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) < 5:                      # OpenCV 4's warp, as for CIFAR's tilt
        v = perturb(x, "tilt", suite=suite).permute(0, 1, 3, 4, 2).numpy()
        for i in (0, 7, 30):
            want = crop(cv2.warpPerspective(x[1].permute(1, 2, 0).numpy(), _script_tilt_matrix(w, h, i - 15.0),
                                            (w, h)))
            np.testing.assert_array_equal(v[1, i], want, err_msg=f"tilt {i}")
    v = perturb(x, "zoom_blur", suite=suite).permute(0, 1, 3, 4, 2).numpy()
    img = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    avg = TF.to_tensor(Image.fromarray(crop(img)))
    for i in range(1, 31):
        avg += TF.to_tensor(Image.fromarray(crop(affine(img, scale=1 + 0.004 * i))))
        np.testing.assert_array_equal(v[0, i], np.asarray(TF.to_pil_image(avg / (i + 1))), err_msg=f"zoom {i}")


def test_rb_corrupt_gallery_of_a_p_suite(tmp_path, capsys):
    """rb-corrupt --suite cifar10-p --gallery: one row per perturbation (14), 8 frames each, a picture a person can
    look at; the first and last tiles of the translate row are the sequence's frames 0 and 15."""
    from PIL import Image

    from robustbench_augmix.cli.corrupt import main as corrupt_main

    out = tmp_path / "p.png"
    assert corrupt_main(["--suite", "cifar10-p", "--gallery", str(out)]) == 0
    assert "8 frames of each perturbation" in capsys.readouterr().out
    pic = Image.open(out)
    size, pad, label_w = 96, 4, 150
    assert pic.size == (label_w + 8 * (size + pad), 6 + 14 * (size + 16 + pad))
    # a tile is a frame: the translate row (7th) starts shifted left (black on the right) and ends shifted right
    row = 6
    y0 = 6 + row * (size + 16 + pad) + 14
    first = np.asarray(pic.crop((label_w, y0, label_w + size, y0 + size)))
    last = np.asarray(pic.crop((label_w + 7 * (size + pad), y0, label_w + 7 * (size + pad) + size, y0 + size)))
    assert first[:, -10:].max() == 0 and first[:, :10].max() > 0
    assert last[:, :20].max() == 0 and last[:, -10:].max() > 0
