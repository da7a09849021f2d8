"""What users and real clients hit (issue #20): the reference package's call convention, listings that
print every name, and a one-line error for a GPU that is not there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo

import robustbench_augmix as rba


@pytest.mark.parametrize("shape", [(33, 40), (33, 40, 1), (33, 40, 3), (31, 31, 3)])
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


def test_rb_corrupt_list_prints_the_extra_corruptions(capsys):
    from robustbench_augmix.cli.corrupt import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "[speckle_noise]" in out and "[saturate]" in out and ", , ," not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    from robustbench_augmix.cli.bench import main as bench_main
    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.cli.train import main as train_main

    assert eval_main(["--arch", "cifar:smallcnn", "--checkpoint", "x.pt", "--device", "cuda"]) == 2
    assert train_main(["--recipe", "digits-smallcnn-standard", "--out", str(tmp_path / "t"), "--device", "cuda"]) == 2
    assert corrupt_main(["--suite", "cifar10-c", "--data", ".", "--out", str(tmp_path / "c"), "--device", "cuda"]) == 2
    assert bench_main(["corruptions", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("no CUDA device is visible here") == 4 and "Traceback" not in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def test_shards_are_counted_from_zero(capsys):
    from robustbench_augmix.cli.corrupt import main

    assert main(["--suite", "cifar10-c", "--data", ".", "--out", "x", "--shard", "4/4"]) == 2
    assert "counted from 0" in capsys.readouterr().err
