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
    import robustbench_augmix.corruptions as rc

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
