"""The same code on CUDA: every corruption, the batched AugMix path, rb-eval with AMP and channels-last,
and a training epoch. Skipped where no CUDA device is present (CI); ``benchmarks/gpu.sh`` runs them with
the GPU benchmarks when a GPU is lent.

What is compared with the CPU, and how:
- corruptions whose random draws are all small per-image parameters (drawn on the CPU whatever the device)
  see the same draws on both devices: their uint8 output must agree with the CPU's to one level on
  99.9 % of the values (float operation order differs between the devices);
- corruptions that draw large fields on the device get a different, equally valid stream there (see
  ``corruptions/_rng.py``): their mean absolute change from the clean image must be within 10 % of the
  CPU's, the fidelity criterion of the random corruptions;
- on CUDA itself: the same seeds give the same output, whatever the batch it is in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo

from robustbench_augmix.corruptions import REGISTRY, apply, load_suite, to_uint8
from robustbench_augmix.corruptions._rng import Draws, image_seed

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SUITE = "imagenet-c"


def _device_fields(name: str) -> bool:
    """Whether ``name`` draws a large random field on the batch's device (normal, uniform, integers)."""
    used = []
    orig = {m: getattr(Draws, m) for m in ("normal", "uniform", "integers")}

    def spy(m):
        def f(self, *a, **k):
            used.append(m)
            return orig[m](self, *a, **k)
        return f

    try:
        for m in orig:
            setattr(Draws, m, spy(m))
        x = torch.rand(1, 3, 32, 32)
        for sev in (1, 5):
            apply(x, name, sev, suite=SUITE, seeds=[image_seed(0, SUITE, name, sev, 0)])
    finally:
        for m, f in orig.items():
            setattr(Draws, m, f)
    return bool(used)


def _photos(n: int, size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([photo(i, size) for i in range(n)])).permute(0, 3, 1, 2).float() / 255


NAMES = sorted(n for n in load_suite(SUITE).names(extra=True) if n in REGISTRY)


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name", NAMES)
def test_every_corruption_on_cuda_agrees_with_the_cpu(name, severity):
    x = _photos(4, 224)
    seeds = [image_seed(0, SUITE, name, severity, i) for i in range(4)]
    cpu = to_uint8(apply(x, name, severity, suite=SUITE, seeds=seeds))
    gpu = apply(x.cuda(), name, severity, suite=SUITE, seeds=seeds)
    assert gpu.device.type == "cuda" and gpu.shape == x.shape and torch.isfinite(gpu).all()
    assert gpu.min() >= 0 and gpu.max() <= 1
    gpu = to_uint8(gpu).cpu()
    if _device_fields(name):
        change = lambda y: (y.float() - (x * 255).round()).abs().mean().item()  # noqa: E731
        assert abs(change(gpu) - change(cpu)) <= 0.10 * change(cpu) + 0.5, (change(gpu), change(cpu))
    else:
        diff = (gpu.int() - cpu.int()).abs()
        assert (diff <= 1).float().mean() >= 0.999 and diff.float().mean() < 0.05, diff.float().mean()


@pytest.mark.parametrize("name", NAMES)
def test_cuda_output_is_keyed_per_image_not_per_batch(name):
    x = _photos(5, 224).cuda()
    seeds = [image_seed(0, SUITE, name, 3, i) for i in range(5)]
    whole = to_uint8(apply(x, name, 3, suite=SUITE, seeds=seeds))
    again = to_uint8(apply(x, name, 3, suite=SUITE, seeds=seeds))
    assert torch.equal(whole, again)
    part = to_uint8(apply(x[2:4], name, 3, suite=SUITE, seeds=seeds[2:4]))
    # cuDNN may pick another algorithm for another batch size: one level of rounding at most
    assert (part.int() - whole[2:4].int()).abs().max() <= 1


def test_batched_augmix_on_cuda_equals_the_cpu():
    from robustbench_augmix.augmix.batched import augmix_batch, encode_draws
    from robustbench_augmix.augmix.mixing import draw_mix

    x = (_photos(8, 32) * 255).round().to(torch.uint8)
    enc = torch.utils.data.default_collate(
        [encode_draws([draw_mix(np.random.default_rng(i)) for _ in range(2)], 3) for i in range(8)])
    cpu = augmix_batch(x, enc, [0.5] * 3, [0.5] * 3)
    gpu = augmix_batch(x.cuda(), {k: v.cuda() for k, v in enc.items()}, [0.5] * 3, [0.5] * 3)
    for a, b in zip(cpu, gpu, strict=True):
        # the same ops and draws; interpolation and rounding in another order on the device
        assert b.device.type == "cuda" and ((b.cpu() - a).abs() > 2 / 255 / 0.5).float().mean() < 0.002


def test_rb_eval_on_cuda_with_amp_and_channels_last(tmp_path, cifar_root):
    import json

    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.models import build

    root, _ = cifar_root
    torch.manual_seed(0)
    net = build("cifar:wrn40_2", num_classes=10).eval()
    w = tmp_path / "w.pt"
    torch.save(net.state_dict(), w)
    common = ["--checkpoint", str(w), "--arch", "cifar:wrn40_2", "--data", str(root), "--corruptions",
              "contrast,jpeg_compression", "--severities", "1,5", "--no-progress", "--bootstrap", "0"]
    assert eval_main([*common, "--out", str(tmp_path / "cpu")]) == 0
    assert eval_main([*common, "--out", str(tmp_path / "gpu"), "--device", "cuda", "--amp",
                      "--channels-last"]) == 0
    a, b = (json.loads(next((tmp_path / d).glob("*.json")).read_text()) for d in ("cpu", "gpu"))
    env = b["environment"]
    assert env["device"].startswith("cuda") and env["amp"] and env["channels_last"]
    # contrast and JPEG draw nothing at random: the same images; fp16 may flip a near-tie (12 images per cell)
    cells = {(c["corruption"], c["severity"]): c["error"] for c in b["cells"]}
    assert len(cells) == len(a["cells"]) == 5  # 4 cells and clean
    for c in a["cells"]:
        assert abs(cells[(c["corruption"], c["severity"])] - c["error"]) <= 2 / 12 + 1e-9, c


def test_a_training_epoch_on_cuda_with_amp_and_channels_last(tmp_path):
    from robustbench_augmix.data.sources import ArraySource
    from robustbench_augmix.data.training import digits
    from robustbench_augmix.train import TrainConfig, Trainer, load_recipe

    d = digits("train")
    src = ArraySource(d.images[:256], d.labels[:256], d.classes)
    r = load_recipe("digits-smallcnn-augmix", epochs=1)
    t = Trainer(r, TrainConfig(out=str(tmp_path / "run"), device="cuda", amp=True, channels_last=True,
                               progress=False), train_set=src, test_set=src)
    assert t.batched  # AugMix runs on the device by default on CUDA
    row = t.fit()
    assert np.isfinite(row["train_loss"]) and (tmp_path / "run" / "card.toml").exists()


def test_cells_drawn_on_the_cpu_are_not_completed_on_cuda(tmp_path, cifar_root, capsys):
    """rb-eval and rb-corrupt record the random-stream device: a CPU run resumed with --device cuda is
    refused, naming the devices, instead of mixing two streams."""
    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.models import build

    root, _ = cifar_root
    torch.manual_seed(0)
    w = tmp_path / "w.pt"
    torch.save(build("cifar:wrn40_2", num_classes=10).state_dict(), w)
    common = ["--checkpoint", str(w), "--arch", "cifar:wrn40_2", "--data", str(root), "--corruptions",
              "gaussian_noise", "--severities", "2", "--no-progress", "--bootstrap", "0", "--out", str(tmp_path / "r")]
    assert eval_main(common) == 0
    assert eval_main([*common, "--device", "cuda"]) == 2
    assert "rng_device: cpu there, cuda:" in capsys.readouterr().err
    args = ["--suite", "cifar10-c", "--data", str(root), "--out", str(tmp_path / "C"), "--corruptions",
            "gaussian_noise"]
    assert corrupt_main(args) == 0
    assert corrupt_main([*args, "--device", "cuda"]) == 2
    assert "rng_device: cpu there, cuda:" in capsys.readouterr().err
