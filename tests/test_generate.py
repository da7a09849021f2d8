"""rb-corrupt end to end on small datasets the tests write in the real on-disk formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import robustbench_augmix as rba
from robustbench_augmix.cli.corrupt import main
from robustbench_augmix.generate import Generator, Plan


def test_cifar_layout_matches_corrupt(cifar_root, tmp_path):
    root, imgs = cifar_root
    out = tmp_path / "C"
    assert main(["--suite", "cifar10-c", "--data", str(root), "--out", str(out),
                 "--corruptions", "gaussian_noise,contrast,frost"]) == 0
    arr = np.load(out / "gaussian_noise.npy")
    assert arr.shape == (5 * 12, 32, 32, 3) and arr.dtype == np.uint8
    labels = np.load(out / "labels.npy")
    assert labels.shape == (60,) and list(labels[:12]) == list(range(10)) + [0, 1]
    assert list(labels[12:24]) == list(labels[:12])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    for s in (1, 5):  # severity-major, test-set order inside each block
        want = rba.corrupt(x, "gaussian_noise", s, suite="cifar10-c", seed=0)
        got = torch.from_numpy(arr[(s - 1) * 12 : s * 12]).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(got, want)
    man = json.loads((out / "manifest.json").read_text())
    assert man["suite"] == "cifar10-c" and man["seed"] == 0 and set(man["files"]) == {
        "gaussian_noise.npy", "contrast.npy", "frost.npy", "labels.npy"}
    assert "torch" in man["versions"] and len(man["table_hash"]) == 16


def test_two_shards_equal_one_process(cifar_root, tmp_path):
    root, _ = cifar_root
    names = "gaussian_noise,glass_blur,fog"
    base = ["--suite", "cifar10-c", "--data", str(root), "--corruptions", names]
    assert main(base + ["--out", str(tmp_path / "one")]) == 0
    for k in (0, 1):
        assert main(["--suite", "cifar10-c", "--data", str(root), "--out", str(tmp_path / "two"),
                     "--corruptions", names, "--shard", f"{k}/2", "--batch-size", "5"]) == 0
    for n in names.split(","):
        assert (tmp_path / "one" / f"{n}.npy").read_bytes() == (tmp_path / "two" / f"{n}.npy").read_bytes()


def test_imagefolder_layout_resume_is_byte_identical(folder_root, tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    args = ["--suite", "tinyimagenet-c", "--data", str(folder_root), "--corruptions", "shot_noise,zoom_blur",
            "--severities", "1,3", "--batch-size", "2"]
    assert main(args + ["--out", str(out_a)]) == 0
    files = sorted(p.relative_to(out_a) for p in out_a.rglob("*.JPEG"))
    assert len(files) == 2 * 2 * 6 and str(files[0]).startswith("shot_noise/1/n01/")
    with Image.open(out_a / files[0]) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
    # A killed run: only part of the files written, no completion markers. Resuming finishes the rest.
    plan = Plan(suite="tinyimagenet-c", data=str(folder_root), out=str(out_b),
                corruptions=["shot_noise", "zoom_blur"], severities=[1, 3], batch_size=2)
    calls = {"n": 0}

    def die(n):
        calls["n"] += n
        if calls["n"] >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Generator(plan, progress=die).run()
    partial = list(out_b.rglob("*.JPEG"))
    assert 0 < len(partial) < len(files)
    assert not list(out_b.rglob("*.part")), "a partial file was left behind"
    assert main(args + ["--out", str(out_b)]) == 0
    for f in files:
        assert (out_a / f).read_bytes() == (out_b / f).read_bytes(), f
    man = json.loads((out_b / "manifest.json").read_text())
    assert len(man["files"]) == len(files)


def test_broken_source_image_is_reported(folder_root, tmp_path, capsys):
    bad = folder_root / "n02" / "img_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    args = ["--suite", "tinyimagenet-c", "--data", str(folder_root), "--corruptions", "contrast", "--severities", "1"]
    assert main(args + ["--out", str(tmp_path / "f")]) == 2
    assert "img_1.JPEG" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "s"), "--on-error", "skip"]) == 0
    assert len(list((tmp_path / "s").rglob("*.JPEG"))) == 5
    assert "img_1.JPEG" in capsys.readouterr().err


def test_other_run_in_out_folder_is_refused(cifar_root, tmp_path, capsys):
    root, _ = cifar_root
    out = str(tmp_path / "o")
    assert main(["--suite", "cifar10-c", "--data", str(root), "--out", out, "--corruptions", "contrast"]) == 0
    assert main(["--suite", "cifar10-c", "--data", str(root), "--out", out, "--corruptions", "contrast",
                 "--seed", "1"]) == 2
    assert "different run" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--suite", "cifar10-c", "--data", "/nonexistent", "--out", "x"], "cifar-10-batches-py"),
    (["--suite", "nope"], "unknown suite"),
    (["--suite", "cifar10-c", "--data", ".", "--out", "x", "--severities", "0,9"], "--severities"),
    (["--suite", "cifar10-c"], "--data"),
])
def test_cli_user_errors_exit_2_with_a_message(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_gallery(tmp_path):
    assert main(["--gallery", str(tmp_path / "g.png"), "--suite", "cifar10-c"]) == 0
    with Image.open(tmp_path / "g.png") as im:
        assert im.size[1] > 18 * 128


def test_resuming_on_another_random_stream_device_is_refused(cifar_root, tmp_path, capsys, monkeypatch):
    """rb-corrupt's run identity names the device whose random stream drew the fields: files drawn on the
    CPU are never completed on a GPU (simulated; tests/test_gpu.py runs it on a real one)."""
    import robustbench_augmix.generate as generate

    root, _ = cifar_root
    out = str(tmp_path / "o")
    args = ["--suite", "cifar10-c", "--data", str(root), "--out", out, "--corruptions", "gaussian_noise,fog"]
    assert main([*args, "--limit", "6"]) == 0
    assert json.loads((tmp_path / "o" / ".rba" / "run.json").read_text())["rng_device"] == "cpu"
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["rng_device"] == "cpu"
    monkeypatch.setattr(generate, "rng_device", lambda device: "cuda:NVIDIA H200")
    capsys.readouterr()
    assert main([*args, "--limit", "6"]) == 2
    err = capsys.readouterr().err
    assert "rng_device: cpu there, cuda:NVIDIA H200 now" in err and "another device" in err
