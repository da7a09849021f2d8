"""rb-train: the recipes against the release's hyperparameters, the schedules, a short run that learns,
kill-and-resume equal to an uninterrupted run, torchrun with 2 gloo processes, and the exported card."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_cifar_train

from robustbench_augmix.data.sources import ArraySource
from robustbench_augmix.data.training import digits
from robustbench_augmix.train import (
    TrainConfig,
    Trainer,
    TrainError,
    learning_rate,
    load_recipe,
    recipes,
)

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("name", recipes())
def test_every_recipe_loads_and_builds(name):
    r = load_recipe(name)
    assert r.epochs > 0 and r.batch_size > 0 and r.lr > 0 and r.schedule in ("cosine", "step")
    assert len(r.mean) == len(r.std) == 3 and r.input_size in (32, 224)
    from robustbench_augmix.baselines import get_method
    from robustbench_augmix.models import build

    m = get_method(r.method)
    assert (r.augmix, r.jsd) == (m.augmix, m.jsd)
    assert not (r.jsd and m.views == "one")  # the JSD loss needs several views of each image
    assert set(r.method_args) == set(m.args)

    if r.arch.startswith("cifar:"):
        build(r.arch, num_classes=10)


# augmix.md 1.4 / 1.5 and the release README: (epochs, lr, nesterov, weight decay, batch, severity, schedule)
RELEASE = {
    "cifar10-wrn40_2-augmix": (100, 0.1, True, 5e-4, 128, 3, "cosine"),
    "cifar10-allconv-augmix": (100, 0.1, True, 5e-4, 128, 3, "cosine"),
    "cifar10-densenet40_12-augmix": (200, 0.1, True, 1e-4, 128, 3, "cosine"),
    "cifar10-resnext29_4x32d-augmix": (200, 0.1, True, 5e-4, 128, 3, "cosine"),
    "cifar100-wrn40_2-augmix": (100, 0.1, True, 5e-4, 128, 3, "cosine"),
    "imagenet-resnet50-augmix": (90, 0.1, False, 1e-4, 256, 1, "step"),
}


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_recipes_follow_the_release(name):
    r = load_recipe(name)
    assert (r.epochs, r.lr, r.nesterov, r.weight_decay, r.batch_size, r.severity, r.schedule) == RELEASE[name]
    assert r.augmix and r.jsd and r.jsd_lambda == 12 and r.width == 3 and r.depth == -1 and r.alpha == 1
    assert not r.all_ops and r.momentum == 0.9


def test_schedules_and_overrides():
    r = load_recipe("cifar10-wrn40_2-augmix", epochs=10)
    assert learning_rate(r, 0, 100) == pytest.approx(0.1)
    assert learning_rate(r, 500, 100) == pytest.approx((0.1 + 1e-6) / 2)
    assert learning_rate(r, 1000, 100) == pytest.approx(1e-6)
    im = load_recipe("imagenet-resnet50-augmix", batch_size=512)
    # x0.1 at epochs // 3 = 30 and 60, times batch / 256
    assert [learning_rate(im, e * 10, 10) for e in (0, 29, 30, 59, 60, 89)] == pytest.approx(
        [0.2, 0.2, 0.02, 0.02, 0.002, 0.002])
    with pytest.raises(TrainError, match="unknown recipe fields"):
        load_recipe("cifar10-wrn40_2-augmix", epoch=3)
    with pytest.raises(TrainError, match="did you mean"):
        load_recipe("cifar10-wrn40-augmix")
    with pytest.raises(TrainError, match="JSD loss needs AugMix"):
        load_recipe("cifar10-wrn40_2-augmix", augmix=False)


def _tiny(n=96, split="train"):
    d = digits(split)
    return ArraySource(d.images[:n], d.labels[:n], d.classes)


TEST = _tiny(100, "test")


def _cfg(out, **kw):
    return TrainConfig(out=str(out), progress=False, **kw)


def _train_loss(trainer) -> float:
    trainer.model.eval()
    x = torch.stack([trainer.pre(a) for a in trainer.ds.base.source.images])
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(trainer.model(x), torch.as_tensor(trainer.ds.base.labels)))


@pytest.mark.parametrize("batched", [False, True])
def test_two_epochs_lower_the_loss(tmp_path, batched):
    r = load_recipe("digits-smallcnn-augmix", epochs=2, batch_size=16)
    t = Trainer(r, _cfg(tmp_path / "run", batched=batched), train_set=_tiny(192), test_set=TEST)
    before = _train_loss(t)
    row = t.fit()
    assert _train_loss(t) < before - 0.1  # from chance (log 10 = 2.30)
    assert row["epoch"] == 2 and 0 <= row["test_error"] <= 1
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss") and len(log) == 3


@pytest.mark.parametrize("recipe", ["digits-smallcnn-augmix", "digits-smallcnn-standard"])
def test_resume_equals_an_uninterrupted_run(tmp_path, recipe):
    r = load_recipe(recipe, epochs=3)
    full = Trainer(r, _cfg(tmp_path / "full"), train_set=_tiny(), test_set=TEST)
    full.fit()
    part = Trainer(r, _cfg(tmp_path / "part", stop_after=1), train_set=_tiny(), test_set=TEST)
    part.fit()
    assert not (tmp_path / "part" / "model.safetensors").exists()
    with pytest.raises(TrainError, match="--resume"):
        Trainer(r, _cfg(tmp_path / "part"), train_set=_tiny())
    resumed = Trainer(r, _cfg(tmp_path / "part", resume=True), train_set=_tiny(), test_set=TEST)
    assert resumed.epoch == 1
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "log.csv").read_text().splitlines()[1:][-1].split(",")[:4] == \
        (tmp_path / "part" / "log.csv").read_text().splitlines()[1:][-1].split(",")[:4]
    # a checkpoint from another recipe is refused, naming what differs
    with pytest.raises(TrainError, match="epochs"):
        Trainer(load_recipe(recipe, epochs=4), _cfg(tmp_path / "part", resume=True), train_set=_tiny())


def test_kill_and_resume_with_the_cli(tmp_path):
    """SIGKILL in the middle of a run, then --resume: the weights equal an uninterrupted run's."""
    data = write_cifar_train(tmp_path / "c")
    args = [sys.executable, "-m", "robustbench_augmix.cli.train", "--recipe", "cifar10-wrn40_2-augmix", "--arch",
            "cifar:smallcnn", "--epochs", "4", "--batch-size", "16", "--data", str(data), "--no-progress",
            "--threads", "1"]
    subprocess.run(args + ["--out", str(tmp_path / "full")], env=ENV, check=True, capture_output=True)
    p = subprocess.Popen(args + ["--out", str(tmp_path / "cut")], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ckpt.exists() and not (tmp_path / "cut" / "card.toml").exists()
    out = subprocess.run(args + ["--out", str(tmp_path / "cut"), "--resume"], env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_exported_card_evaluates_with_rb_eval(tmp_path):
    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.cli.train import main as train_main
    from robustbench_augmix.zoo import get_card, load_model

    data = write_cifar_train(tmp_path / "c")
    out = tmp_path / "runs" / "tiny-wrn"
    assert train_main(["--recipe", "cifar10-wrn40_2-augmix", "--arch", "cifar:smallcnn", "--epochs", "1",
                       "--batch-size", "32", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    card = get_card(str(out / "card.toml"))
    assert card.id == "tiny-wrn" and card.dataset == "cifar10" and card.builder == "cifar:smallcnn"
    assert card.recipe["recipe_id"] == "cifar10-wrn40_2-augmix" and card.recipe["epochs"] == 1
    model, pre, info = load_model(card)
    assert info["weights_sha256"] == card.weights["sha256"] and pre.mean == (0.5, 0.5, 0.5)
    res = tmp_path / "res"
    assert eval_main(["--model", str(out / "card.toml"), "--suite", "cifar10-c", "--data", str(data),
                      "--corruptions", "fog", "--severities", "1", "--out", str(res), "--no-progress",
                      "--bootstrap", "0"]) == 0
    assert (res / "tiny-wrn__cifar10-c.json").exists()
    # a tampered weights file is refused through its card's checksum
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:-1] + b"\0")
    from robustbench_augmix.zoo import WeightsMissing

    with pytest.raises(WeightsMissing, match="does not match"):
        load_model(card)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from robustbench_augmix.cli.train import main as train_main

    assert train_main(["--recipe", "nope", "--out", str(tmp_path)]) == 2
    assert "no recipe 'nope'" in capsys.readouterr().err
    assert train_main(["--recipe", "digits-smallcnn-augmix", "--out", str(tmp_path / "x"), "--resume"]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    # CIFAR neither given nor downloadable here: the error says how to provide it
    os.environ["RBA_CACHE"] = str(tmp_path / "cache")
    try:
        assert train_main(["--recipe", "cifar10-wrn40_2-augmix", "--out", str(tmp_path / "y")]) == 2
    finally:
        del os.environ["RBA_CACHE"]
    assert "--data" in capsys.readouterr().err
    assert train_main(["--list"]) == 0
    assert "cifar10-wrn40_2-augmix" in capsys.readouterr().out


@pytest.mark.parametrize("recipe,port", [("digits-smallcnn-augmix", 29517), ("digits-smallcnn-cutmix", 29518),
                                         ("digits-smallcnn-adversarial", 29519)])
def test_torchrun_two_processes(tmp_path, recipe, port):
    """AugMix, a batch-mixing method (draws per rank) and PGD (extra passes through the bare module, outside
    DDP's hooks) under torchrun with 2 gloo processes."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "robustbench_augmix.cli.train", "--recipe", recipe, "--epochs", "2", "--limit",
           "96", "--out", str(out), "--no-progress", "--threads", "1"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 3 and (out / "card.toml").exists()
    # the ranks' shares of an epoch partition the images: none is seen twice, none skipped
    from robustbench_augmix.train import _EpochSampler

    a, b = _EpochSampler(96, 0, 0, 2), _EpochSampler(96, 0, 1, 2)
    assert set(a) | set(b) == set(range(96)) and not set(a) & set(b)


@pytest.mark.parametrize("batched", [False, True])
def test_imagefolder_training_with_the_imagenet_recipe(folder_root, tmp_path, batched):
    """RandomResizedCrop(224) + flip + AugMix at severity 1 on an ImageFolder tree of JPEGs of assorted sizes."""
    r = load_recipe("imagenet-resnet50-augmix", arch="cifar:smallcnn", epochs=1, batch_size=6)
    t = Trainer(r, TrainConfig(out=str(tmp_path / "in"), data=str(folder_root), progress=False, batched=batched))
    assert t.num_classes == 2 and len(t.ds) == 6
    (x, y) = t.ds[0] if not batched else (t.ds[0][0], t.ds[0][2])
    assert (x[0].shape if not batched else x.shape) == (3, 224, 224)
    row = t.fit()
    assert row["epoch"] == 1 and row["test_error"] is None and (tmp_path / "in" / "card.toml").exists()
    assert learning_rate(r, 0, 1) == pytest.approx(0.1 * 6 / 256)


def test_rb_bench_train_reports_both_paths(tmp_path, capsys):
    import json

    from robustbench_augmix.cli.bench import main as bench_main

    out = tmp_path / "b.json"
    assert bench_main(["train", "--model", "cifar:smallcnn", "--sizes", "32", "--batch", "8", "--min-time", "0.01",
                       "--json", str(out), "--markdown"]) == 0
    res = json.loads(out.read_text())
    assert res["batched_ms"] == pytest.approx(res["batched_host_ms"] + res["batched_device_ms"])
    assert res["speedup"] == pytest.approx(res["per_image_ms"] / res["batched_ms"])
    assert 0 < res["aug_share_of_step"] < 1 and res["per_image_ms"] > 0 and res["step_ms"] > 0
    assert "batched / per-image speed-up" in capsys.readouterr().out


def test_a_run_of_an_unchanged_recipe_carries_its_cards_numbers_to_the_leaderboard(tmp_path, cifar_root):
    """rb-train's card holds the published numbers of the zoo card its recipe reproduces (not when the recipe
    was changed), and the leaderboard compares the run with them."""
    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.report import leaderboard, load_results
    from robustbench_augmix.zoo import get_card

    root, imgs = cifar_root
    train = ArraySource(imgs[:10], np.arange(10), None)
    r = load_recipe("cifar10-wrn40_2-standard")
    Trainer(r, _cfg(tmp_path / "wrn-std"), train_set=train, test_set=train).export()
    card = get_card(str(tmp_path / "wrn-std" / "card.toml"))
    paper = get_card("wrn40_2_standard_cifar10").reported
    assert card.reported["reproduces"] == "wrn40_2_standard_cifar10"
    assert card.reported["mean_corruption_error"] == paper["mean_corruption_error"] == 26.9
    assert "not this run's" in card.note

    changed = Trainer(load_recipe(r.id, epochs=3), _cfg(tmp_path / "short"), train_set=train, test_set=train)
    short = get_card(str(changed.export()))
    assert dict(short.reported) == {} and "epochs 100 -> 3" in short.note
    limited = Trainer(r, _cfg(tmp_path / "lim", limit=5), train_set=train, test_set=train)
    assert "first 5 images" in get_card(str(limited.export())).note

    res = tmp_path / "res"
    assert eval_main(["--model", str(tmp_path / "wrn-std" / "card.toml"), "--data", str(root), "--corruptions",
                      "fog", "--severities", "1", "--out", str(res), "--no-progress", "--bootstrap", "0"]) == 0
    row = leaderboard(load_results([res / "wrn-std__cifar10-c.json"])).rows[0]
    assert row["reported_mean_corruption_error"] == 26.9
    assert row["delta_mean_corruption_error"] == pytest.approx(row["mean_corruption_error"] - 26.9, abs=0.01)
