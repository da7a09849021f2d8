"""One contract, checked on every registered corruption of every suite: shape, dtype and range kept,
no in-place writes, bit-identical output whatever the batch size, same key same output, and
clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo, to_tensor

import robustbench_augmix as rba
from robustbench_augmix.corruptions import REGISTRY, load_suite

SIZES = {"imagenet-c": 224, "cifar10-c": 32, "cifar100-c": 32, "tinyimagenet-c": 64}
IMPLEMENTED = sorted(REGISTRY)
CASES = [(s, n) for s in ["imagenet-c", "cifar10-c", "tinyimagenet-c"] for n in IMPLEMENTED]


def test_every_table_corruption_has_a_kernel():
    for s in rba.suites():
        missing = set(load_suite(s).names(extra=True)) - set(REGISTRY)
        assert not missing, (s, missing)


@pytest.mark.parametrize("suite,name", CASES)
def test_kernel_contract(suite, name):
    size = SIZES[suite]
    x = to_tensor([photo(i, size) for i in range(5)])
    before = x.clone()
    y = rba.corrupt(x, name, 5, suite=suite, seed=3)
    assert torch.equal(x, before), "input modified in place"
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(torch.round(y * 255), y * 255) or torch.allclose(torch.round(y * 255), y * 255, atol=1e-4)
    assert not torch.equal(y, x), "corruption left the images unchanged"
    # Bit-identical whatever the batch split: image i is keyed by its index, not its batch.
    parts = [rba.corrupt(x[a:b], name, 5, suite=suite, seed=3, index=list(range(a, b)))
             for a, b in [(0, 1), (1, 3), (3, 5)]]
    assert torch.equal(torch.cat(parts), y)
    # Same key, same output; another seed, another draw (for the random ones).
    assert torch.equal(rba.corrupt(x, name, 5, suite=suite, seed=3), y)
    if REGISTRY[name].sample is not None:
        assert not torch.equal(rba.corrupt(x, name, 5, suite=suite, seed=4), y)


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_cpu_chunking_and_memory_layout_do_not_change_the_output(name, monkeypatch):
    import robustbench_augmix.corruptions._core as rc

    x = to_tensor([photo(i, 64) for i in range(5)])
    whole = rba.corrupt(x, name, 4, suite="tinyimagenet-c", seed=2)
    monkeypatch.setattr(rc, "_CPU_CHUNK", 2 * x[0].numel())  # chunks of 2, 2 and 1 images
    assert torch.equal(rba.corrupt(x, name, 4, suite="tinyimagenet-c", seed=2), whole)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(rba.corrupt(cl, name, 4, suite="tinyimagenet-c", seed=2), whole)


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_numpy_uint8_convention_and_single_image(name):
    img = photo(0, 32)
    out = rba.corrupt(img, name, 2, suite="cifar10-c", seed=1, index=7)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    single = rba.corrupt(t, name, 2, suite="cifar10-c", seed=1, index=7)
    assert single.shape == (3, 32, 32)
    assert np.array_equal((single * 255).round().byte().permute(1, 2, 0).numpy(), out)
    grey = rba.corrupt(img[:, :, 0], name, 2, suite="cifar10-c", seed=1)
    assert grey.shape == (32, 32, 3)


@pytest.mark.parametrize("name", [n for n in IMPLEMENTED if REGISTRY[n].levels is not None])
@pytest.mark.parametrize("suite", ["imagenet-c", "cifar10-c", "tinyimagenet-c"])
def test_8bit_kernels_equal_the_quantised_float_kernel(suite, name):
    """rb-corrupt hands uint8 batches to the 8-bit CPU kernels; they must store what the float kernels
    (the only ones on a GPU) give."""
    from robustbench_augmix.corruptions import apply
    from robustbench_augmix.corruptions._ops import to_uint8

    u8 = torch.from_numpy(np.stack([photo(i, SIZES[suite]) for i in range(4)])).permute(0, 3, 1, 2)
    for sev in (1, 2, 3, 4, 5):
        got = apply(u8, name, sev, suite=suite, seeds=range(4), levels=True)
        assert got.dtype == torch.uint8 and got.is_contiguous()
        assert torch.equal(got, to_uint8(apply(u8.float() / 255, name, sev, suite=suite, seeds=range(4)))), sev


def test_uint8_tensor_and_empty_batch():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    y = rba.corrupt(x, "contrast", 3, suite="cifar10-c")
    assert y.dtype == torch.uint8 and y.shape == x.shape
    e = rba.corrupt(torch.zeros(0, 3, 32, 32), "fog", 3, suite="cifar10-c")
    assert e.shape == (0, 3, 32, 32)


def test_non_native_sizes_run():
    x = torch.rand(2, 3, 48, 80)
    for name in IMPLEMENTED:
        y = rba.corrupt(x, name, 3, suite="cifar10-c")
        assert y.shape == x.shape


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(corruption="fogg"), "did you mean 'fog'"),
        (dict(severity=6), "severity must be an integer in 1..5"),
        (dict(severity=0), "severity must be an integer in 1..5"),
        (dict(severity=2.0), "severity must be an integer"),
        (dict(suite="imagenet-d"), "unknown suite 'imagenet-d'"),
        (dict(images=torch.rand(2, 4, 8, 8)), r"shape \(N, 3, H, W\)"),
        (dict(images=torch.rand(2, 3, 8, 8) * 2), r"must lie in \[0, 1\]"),
        (dict(images=torch.full((1, 3, 8, 8), float("nan"))), "NaN"),
        (dict(images=np.zeros((8, 8, 3), dtype=np.float32)), "must be uint8"),
        (dict(images=np.zeros((8, 8, 4), dtype=np.uint8)), r"shape \(H, W, 3\)"),
        (dict(images=[1, 2, 3]), "torch tensor or a uint8 numpy array"),
        (dict(index=[1, 2, 3]), "must hold 2 integers"),
        (dict(seed="x"), "seed must be an integer"),
    ],
)
def test_bad_input_is_rejected_clearly(kwargs, match):
    call = dict(images=torch.rand(2, 3, 8, 8), corruption="fog", severity=3, suite="cifar10-c")
    call.update(kwargs)
    images, corruption, severity = call.pop("images"), call.pop("corruption"), call.pop("severity")
    with pytest.raises(ValueError, match=match):
        rba.corrupt(images, corruption, severity, **call)


@pytest.mark.parametrize("io", ["uint8", "float"])
def test_rb_bench_corruptions_table(io, tmp_path, capsys):
    """rb-bench corruptions runs side by side with the reference and sums the benchmark corruptions."""
    import json

    from robustbench_augmix.cli.bench import main as bench_main

    out = tmp_path / "c.json"
    assert bench_main(["corruptions", "--sizes", "32", "--corruptions", "pixelate,spatter", "--batch", "4",
                       "--min-time", "0.001", "--io", io, "--json", str(out), "--markdown"]) == 0
    rows = json.loads(out.read_text())
    assert [(r["corruption"], r["size"], r["io"], r["extra"]) for r in rows] == [
        ("pixelate", 32, io, False), ("spatter", 32, io, True)]
    assert all(r["ours_ms"] > 0 and r["reference_ms"] > 0 for r in rows)
    md = capsys.readouterr().out
    assert "| pixelate |" in md and "| spatter (extra) |" in md and "1 benchmark corruptions (sum)" in md


# ------------------------------------------------------------------------------ the shared kernel contract
def _odd_photos(n: int, h: int = 33, w: int = 37) -> torch.Tensor:
    """n photographs at an odd, non-square size, uint8 (N, 3, H, W)."""
    from PIL import Image

    return torch.from_numpy(np.stack([np.asarray(Image.fromarray(photo(i, 64)).resize((w, h), Image.BILINEAR))
                                      for i in range(n)])).permute(0, 3, 1, 2).contiguous()


DTYPES = {"uint8": torch.uint8, "float32": torch.float32, "float64": torch.float64}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", IMPLEMENTED)
def test_check_kernel_every_corruption_severity_and_dtype(name, severity, dtype):
    """check_kernel (tests/checkers.py) over the registry: odd sizes, N = 0 and 1, non-contiguous and
    channels-last inputs; float64 gives exactly the float32 result, uint8 its 8-bit levels."""
    from checkers import check_kernel

    u8 = _odd_photos(3)
    x = u8 if dtype == "uint8" else u8.to(DTYPES[dtype]) / 255

    def fn(t, index):
        return rba.corrupt(t, name, severity, suite="cifar10-c", seed=5, index=index)

    y = check_kernel(fn, x, value_range=(0, 255) if dtype == "uint8" else (0.0, 1.0))
    if dtype == "float64":
        assert torch.equal(y.float(), fn(u8.float() / 255, [0, 1, 2]))
    if dtype == "uint8":
        assert torch.equal(y, (fn(u8.float() / 255, [0, 1, 2]) * 255).round().to(torch.uint8))


@pytest.mark.parametrize("op", list(__import__("robustbench_augmix.augmix", fromlist=["OP_TABLE"]).OP_TABLE))
def test_check_kernel_every_augmix_operation(op):
    """The batched AugMix kernels under the same contract, each image with its own level and sign, and equal
    to the Pillow kernel of the op table on every image."""
    from checkers import check_kernel
    from PIL import Image

    from robustbench_augmix.augmix import OP_TABLE, OpDraw, apply_op
    from robustbench_augmix.augmix.ops import apply_op_batch

    x = _odd_photos(4).double()
    levels = torch.tensor([0.3, 1.7, 2.4, 2.95], dtype=torch.float64)
    signs = torch.tensor([1, -1, -1, 1])

    def fn(t, index):
        return apply_op_batch(t, op, levels[index], signs[index])

    y = check_kernel(fn, x, value_range=(0, 255))
    for i in range(4):
        pil = Image.fromarray(x[i].permute(1, 2, 0).byte().numpy())
        ref = np.asarray(apply_op(pil, OpDraw(op, float(levels[i]), int(signs[i]))))
        assert np.array_equal(y[i].permute(1, 2, 0).byte().numpy(), ref), (op, i)
    assert OP_TABLE[op].extra == (op in rba_augmix_extra())


def rba_augmix_extra():
    from robustbench_augmix.augmix import EXTRA_OPS

    return EXTRA_OPS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [{}, {"resize": 40, "crop": 36}, {"crop": 31},
                                {"resize": 24, "interpolation": "bicubic"}])
def test_check_kernel_preprocess(kw, dtype):
    from checkers import check_kernel

    from robustbench_augmix.preprocess import Preprocess

    p = Preprocess(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), **kw)
    x = _odd_photos(3).to(dtype) / 255
    # interpolation kernels may sum in another order for other memory layouts: one float32 ulp at these values
    check_kernel(lambda t, index: p(t), x, value_range=None, same_shape=not kw,
                 atol=0 if "resize" not in kw else 1e-5)


# The reference package's call convention (bethgelab/imagecorruptions), over the whole registry.
@pytest.mark.parametrize("shape", [(33, 40), (33, 40, 1), (33, 40, 3), (31, 31, 3), (9, 17, 1), (17, 9)])
def test_the_reference_call_convention(shape):
    """imagecorruptions' ``corrupt(image, corruption_name=..., severity=...)`` and ``corruption_number``, on
    uint8 (H, W), (H, W, 1) and (H, W, 3) images of odd sizes: uint8 (H, W, 3) back, the same pixels as our
    own call on the 3-channel image."""
    from PIL import Image

    rgb = np.asarray(Image.fromarray(photo(0, 64)).resize((shape[1], shape[0])))
    img = rgb[:, :, 0] if len(shape) == 2 else rgb[:, :, :1] if shape[-1] == 1 else rgb
    grey = len(shape) == 2 or shape[-1] == 1
    grey3 = np.repeat(rgb[:, :, :1], 3, axis=2) if grey else rgb
    for number, name in enumerate(rba.corruption_names(extra=True)):
        by_name = rba.corrupt(img, corruption_name=name, severity=2)
        assert by_name.dtype == np.uint8 and by_name.shape == (shape[0], shape[1], 3)
        assert np.array_equal(by_name, rba.corrupt(grey3, name, 2))
        if number in (0, 9, 18):
            assert np.array_equal(rba.corrupt(img, corruption_number=number, severity=2), by_name)


def test_the_corruption_is_named_once():
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="name the corruption once"):
        rba.corrupt(img, "fog", 2, corruption_name="fog")
    with pytest.raises(ValueError, match="corruption_number must be an integer in 0..18"):
        rba.corrupt(img, corruption_number=19, severity=2)
