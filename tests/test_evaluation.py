"""rb-eval end to end on small datasets the tests write in the real on-disk formats, checked against a
direct computation with ``rba.corrupt`` + the model, across sources, resumption and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import photo, write_cifar

import robustbench_augmix as rba
from robustbench_augmix import metrics
from robustbench_augmix.cli.corrupt import main as corrupt_main
from robustbench_augmix.cli.eval import main as eval_main
from robustbench_augmix.evaluation import CacheMismatch, Config, Evaluation

FACTORY = textwrap.dedent("""
    import torch
    from robustbench_augmix import Preprocess

    def build(num_classes=10):
        g = torch.Generator().manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        m.rba_preprocess = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3)
        return m

    def build2():
        return build(2)
""")
CELLS = ["gaussian_noise", "contrast", "pixelate"]
N = 40


def _model(tmp_path, num_classes=10):
    path = tmp_path / "tiny.py"
    path.write_text(FACTORY)
    ns: dict = {}
    exec(compile(FACTORY, str(path), "exec"), ns)
    return path, ns["build"](num_classes)


def _predict(model, x):
    with torch.no_grad():
        logits = model(model.rba_preprocess(x))
    return logits


@pytest.fixture
def cifar_eval(tmp_path):
    """40 CIFAR-format photographs crops whose labels the model gets right about half the time."""
    path, model = _model(tmp_path)
    rng = np.random.default_rng(3)
    imgs = []
    for i in range(N):
        big = photo(i % 5, 96)
        y, x = rng.integers(0, 64, 2)
        imgs.append(big[y : y + 32, x : x + 32])
    imgs = np.stack(imgs)
    pred = _predict(model, torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    labels = np.where(np.arange(N) % 2 == 0, pred, (pred + 1) % 10)
    root = write_cifar(tmp_path / "cifar", imgs, labels)
    return root, path, model, imgs, labels


def _run(args, capsys=None) -> int:
    return eval_main([*args, "--no-progress", "--bootstrap", "50"])


def _cells(doc) -> dict:
    return {(c["corruption"], c["severity"]): c for c in doc["cells"]}


def _strip(doc) -> dict:
    return {k: v for k, v in doc.items() if k not in ("created", "wall_time_s", "resumed_image_cells", "provenance",
                                                       "data", "environment")}


def test_rb_eval_equals_direct_computation(cifar_eval, tmp_path):
    root, factory, model, imgs, labels = cifar_eval
    out = tmp_path / "res"
    assert _run(["--model", f"{factory}:build", "--data", str(root), "--corruptions", ",".join(CELLS),
                 "--severities", "1,4", "--out", str(out), "--chunk-size", "16", "--batch-size", "7"]) == 0
    doc = json.loads((out / "tiny.build__cifar10-c.json").read_text())
    for key in ("schema", "model", "suite", "data", "preprocess", "protocol", "cells", "aggregates", "intervals",
                "baseline", "environment", "wall_time_s"):
        assert key in doc
    assert doc["suite"]["table_hash"] == rba.load_suite("cifar10-c").table_hash
    assert doc["model"]["factory_sha256"] and len(doc["model"]["fingerprint"]) == 64
    assert doc["protocol"]["complete"] is False and doc["baseline"] is None
    assert doc["preprocess"]["mean"] == [0.5, 0.5, 0.5]

    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(labels)
    cells = _cells(doc)
    direct = {("clean", 0): x} | {(c, s): rba.corrupt(x, c, s, suite="cifar10-c", seed=0) for c in CELLS
                                   for s in (1, 4)}
    errs = {}
    for cell, xc in direct.items():
        logits = _predict(model, xc)
        prob = logits.softmax(1)
        correct = (logits.argmax(1) == y).numpy()
        got = cells[cell]
        assert got["n"] == N and got["correct"] == int(correct.sum()), cell
        assert got["correct5"] == int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
        assert got["nll"] == pytest.approx(metrics.nll(logits.double().numpy(), labels), rel=1e-5)
        assert got["ece"] == pytest.approx(metrics.expected_calibration_error(prob.max(1).values.numpy(), correct),
                                           abs=1e-6)
        errs[cell] = 1 - correct.mean()
    agg = doc["aggregates"]
    assert 0.3 < agg["clean_error"] < 0.7  # the labels make the model right about half the time
    assert agg["clean_error"] == pytest.approx(errs[("clean", 0)])
    assert agg["mean_corruption_error"] == pytest.approx(np.mean([errs[k] for k in errs if k[0] != "clean"]))
    lo, hi = doc["intervals"]["clean_error"]
    assert lo <= agg["clean_error"] <= hi
    csv_rows = (out / "tiny.build__cifar10-c.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 1 + len(CELLS) * 2


def test_official_npy_equals_on_the_fly(cifar_eval, tmp_path):
    root, factory, *_ = cifar_eval
    gen = tmp_path / "C10C"
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--out", str(gen),
                         "--corruptions", ",".join(CELLS)]) == 0
    common = ["--model", f"{factory}:build", "--corruptions", ",".join(CELLS), "--severities", "2,5"]
    assert _run([*common, "--data", str(root), "--out", str(tmp_path / "a")]) == 0
    assert _run([*common, "--source", "official", "--data", str(gen), "--clean-data", str(root),
                 "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "tiny.build__cifar10-c.json").read_text())
    b = json.loads((tmp_path / "b" / "tiny.build__cifar10-c__official.json").read_text())
    assert a["data"]["source"] == "generate" and b["data"]["source"] == "official"
    assert a["cells"] == b["cells"] and a["aggregates"] == b["aggregates"]


def test_official_imagefolder_equals_on_the_fly_with_storage_jpeg(folder_root, tmp_path):
    path, _ = _model(tmp_path, 2)
    gen = tmp_path / "TinyC"
    cells = "motion_blur,jpeg_compression"
    assert corrupt_main(["--suite", "tinyimagenet-c", "--data", str(folder_root), "--out", str(gen),
                         "--corruptions", cells, "--severities", "2,3"]) == 0
    common = ["--model", f"{path}:build2", "--suite", "tinyimagenet-c", "--corruptions", cells, "--severities", "2,3"]
    assert _run([*common, "--data", str(folder_root), "--out", str(tmp_path / "a")]) == 0
    assert _run([*common, "--source", "official", "--data", str(gen), "--clean-data", str(folder_root),
                 "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "tiny.build2__tinyimagenet-c.json").read_text())
    b = json.loads((tmp_path / "b" / "tiny.build2__tinyimagenet-c__official.json").read_text())
    assert a["data"]["storage_jpeg"] == 85
    assert a["cells"] == b["cells"]


def test_killed_run_resumes_to_the_same_result(cifar_eval, tmp_path, monkeypatch):
    root, factory, model, *_ = cifar_eval
    kw = dict(corruptions=CELLS, severities=[1, 3], out=str(tmp_path / "r"), chunk_size=10, n_boot=30,
              progress=False)
    full = Evaluation(model, Config(suite="cifar10-c", data=str(root), name="full", **kw)).run()

    calls = {"n": 0}
    orig = Evaluation._run_chunk

    def dying(self, *a, **k):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(Evaluation, "_run_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        Evaluation(model, Config(suite="cifar10-c", data=str(root), name="killed", **kw)).run()
    cache = tmp_path / "r" / "killed.cells"
    assert sorted(p.name for p in cache.glob("chunk-*.npz")) == ["chunk-00000.npz", "chunk-00001.npz"]
    assert not (tmp_path / "r" / "killed.json").exists()
    monkeypatch.setattr(Evaluation, "_run_chunk", orig)
    resumed = Evaluation(model, Config(suite="cifar10-c", data=str(root), name="killed", **kw)).run()
    assert resumed.data["resumed_image_cells"] == 2 * 10 * 7
    assert _strip(resumed.data) == _strip(full.data)

    # A different seed, model or suite table under the same name is refused, not mixed in.
    with pytest.raises(CacheMismatch, match="seed: 0 there, 1 now"):
        Evaluation(model, Config(suite="cifar10-c", data=str(root), name="killed", seed=1, **kw)).run()
    other = torch.nn.Sequential(*model)
    with torch.no_grad():
        other[-1].bias.add_(1)
    with pytest.raises(CacheMismatch, match=r"model: [0-9a-f]{12}\.\.\. there.*must seed them"):
        Evaluation(other, Config(suite="cifar10-c", data=str(root), name="killed", **kw),
                   preprocess=model.rba_preprocess).run()


def test_torchrun_two_processes_equal_one(cifar_eval, tmp_path):
    root, factory, *_ = cifar_eval
    common = ["--model", f"{factory}:build", "--data", str(root), "--corruptions", "gaussian_noise,zoom_blur",
              "--severities", "1,5", "--chunk-size", "8", "--batch-size", "5", "--bootstrap", "50", "--no-progress"]
    assert eval_main([*common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "robustbench_augmix.cli.eval", *common, "--out", str(tmp_path / "two"), "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "tiny.build__cifar10-c.json").read_text())
    two = json.loads((tmp_path / "two" / "tiny.build__cifar10-c.json").read_text())
    assert two["environment"]["world_size"] == 2
    assert two["cells"] == one["cells"] and two["aggregates"] == one["aggregates"]
    assert sum(c["n"] for c in two["cells"]) == N * 5  # no image counted twice


def test_mce_against_a_baseline_results_file(cifar_eval, tmp_path):
    root, factory, *_ = cifar_eval
    common = ["--model", f"{factory}:build", "--data", str(root), "--corruptions", "gaussian_noise,contrast",
              "--severities", "4,5"]
    assert _run([*common, "--out", str(tmp_path / "base")]) == 0
    base = tmp_path / "base" / "tiny.build__cifar10-c.json"
    assert _run([*common, "--out", str(tmp_path / "vs"), "--baseline", str(base)]) == 0
    doc = json.loads((tmp_path / "vs" / "tiny.build__cifar10-c.json").read_text())
    # A model normalised by itself has CE = relative CE = 100 %.
    assert doc["aggregates"]["mce"] == pytest.approx(1.0)
    assert doc["baseline"]["source"] == str(base)
    assert doc["aggregates"]["relative_mce"] == pytest.approx(1.0), doc["aggregates"]
    assert doc["aggregates"]["mce"] != doc["aggregates"]["mean_corruption_error"]


def test_bad_inputs_exit_2_without_results(cifar_eval, tmp_path, capsys):
    root, factory, model, *_ = cifar_eval
    out = tmp_path / "bad"
    # The model has 2 outputs; CIFAR-10 has 10 classes.
    assert _run(["--model", f"{factory}:build2", "--data", str(root), "--out", str(out),
                 "--corruptions", "fog", "--severities", "1"]) == 2
    assert "10 classes" in capsys.readouterr().err
    assert not list(out.glob("*.json"))
    # An official folder without the corruption asked for.
    assert _run(["--model", f"{factory}:build", "--source", "official", "--data", str(tmp_path),
                 "--out", str(out)]) == 2
    assert "labels.npy" in capsys.readouterr().err
    assert _run(["--model", f"{factory}:build", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    # A checkpoint that does not fit the architecture names the keys.
    ck = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(3, 3)}}, ck)
    assert _run(["--checkpoint", str(ck), "--arch", "timm:resnet18", "--data", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing keys" in err and "fc.weight" in err
    assert not list(out.glob("*.json"))


def test_checkpoint_loading_is_safe(tmp_path):
    from robustbench_augmix.models import ModelError, load_weights

    path, model = _model(tmp_path)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ddp.pt")
    fresh = _model(tmp_path)[1]
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    load_weights(fresh, tmp_path / "ddp.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
    torch.save(model, tmp_path / "pickled.pt")  # a whole pickled module needs full pickle
    with pytest.raises(ModelError, match="full-pickle"):
        load_weights(fresh, tmp_path / "pickled.pt")
    load_weights(fresh, tmp_path / "pickled.pt", trust=True)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    load_weights(fresh, tmp_path / "w.safetensors")


def test_cifar_from_the_user_cache_and_the_offline_error(tmp_path, monkeypatch):
    from torchvision.datasets import utils as tv_utils

    from robustbench_augmix.data.sources import CifarSource, DatasetMissing

    monkeypatch.setenv("RBA_CACHE", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetMissing, match=r"could not be downloaded.*--data.*cifar-10-python.tar.gz"):
        CifarSource.open(None, "cifar10")
    imgs = np.stack([photo(i, 32) for i in range(4)])
    write_cifar(tmp_path / "cache" / "data", imgs, [1, 2, 3, 4])
    src = CifarSource.open(None, "cifar10")  # found in the cache: no download attempted
    assert len(src) == 4 and np.array_equal(src.read(2), imgs[2]) and list(src.labels) == [1, 2, 3, 4]


def test_imagefolder_labels_map_by_name_into_the_models_classes(tmp_path):
    """A 2-folder subset of a 4-class model: the labels follow the folder names, not the folder order."""
    from conftest import photo
    from PIL import Image

    from robustbench_augmix.evaluation import EvaluationError, evaluate

    root = tmp_path / "val"
    for cls in ("b", "d"):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(photo(k, 64)).save(root / cls / f"{k}.png")

    class AlwaysD(torch.nn.Module):  # logits favour output 3 ("d") for every image
        def forward(self, x):
            return torch.tensor([0.0, 0.0, 0.0, 5.0]).expand(len(x), 4)

    kw = dict(corruptions=["brightness"], severities=[1], progress=False, n_boot=0)
    res = evaluate(AlwaysD(), "tinyimagenet-c", str(root), classes=["a", "b", "c", "d"], **kw)
    assert res.aggregates["clean_error"] == pytest.approx(0.5)  # the 3 "d" images right, the 3 "b" wrong
    assert res["model"]["num_classes"] == 4 and "by name" in res["data"]["class_order"]
    with pytest.raises(EvaluationError, match="classes"):  # folder order would give 2 classes for 4 outputs
        evaluate(AlwaysD(), "tinyimagenet-c", str(root), **kw)
    with pytest.raises(EvaluationError, match=r"1 of the data's 2 class folders .*e\.g\. d"):
        evaluate(AlwaysD(), "tinyimagenet-c", str(root), classes=["a", "b", "c", "x"], **kw)


def test_imagenet_cards_name_their_classes():
    from robustbench_augmix.zoo import get_card, parse_card

    names = get_card("resnet50").class_names()
    # ILSVRC-2012: 1000 WNIDs, sorted; the first is tench (n01440764), the last toilet tissue (n15075141).
    assert len(names) == 1000 and names == sorted(names) and names[0] == "n01440764" and names[-1] == "n15075141"
    assert get_card("wrn40_2_augmix_cifar10").class_names() is None
    raw = {"id": "x", "name": "x", "dataset": "cifar10", "num_classes": 2, "builder": "cifar:smallcnn", "params": 1,
           "weights": {"licence": "-"}, "preprocess": {"input_size": 32, "mean": [0] * 3, "std": [1] * 3},
           "recipe": {}, "reported": {}}
    assert parse_card({**raw, "classes": ["cat", "dog"]}, "t").class_names() == ["cat", "dog"]
    with pytest.raises(ValueError, match="distinct names"):
        parse_card({**raw, "classes": ["cat", "cat"]}, "t")


def test_progress_has_a_bar_per_corruption_with_its_rate(cifar_eval, tmp_path, capsys):
    """The run's bar and one per corruption (clean apart), each with its count and images/s, on stderr."""
    root, factory, model, *_ = cifar_eval
    Evaluation(model, Config(suite="cifar10-c", data=str(root), corruptions=CELLS, severities=[1, 3],
                             chunk_size=20, n_boot=0, progress=True)).run()
    err = capsys.readouterr().err
    lines = {ln.split()[0]: ln for ln in err.splitlines() if ln.strip()}
    assert {"clean", *CELLS} <= set(lines), err
    for c in CELLS:
        assert f"{2 * N}/{2 * N}" in lines[c] and "img/s" in lines[c], lines[c]  # 2 severities x N images
    assert f"{N}/{N}" in lines["clean"]
    assert any(f"{N + 2 * N * len(CELLS)}/{N + 2 * N * len(CELLS)}" in ln for ln in lines.values()), err


def test_a_cache_drawn_on_another_device_is_refused(cifar_eval, tmp_path, monkeypatch):
    """Random fields are drawn on the device, so the device is part of the run identity: cells drawn on the
    CPU are never completed with a GPU's stream (simulated here; tests/test_gpu.py does it on a real GPU)."""
    root, factory, model, *_ = cifar_eval
    kw = dict(corruptions=["gaussian_noise"], severities=[2], out=str(tmp_path / "r"), chunk_size=20, n_boot=0,
              progress=False, name="dev")
    res = Evaluation(model, Config(suite="cifar10-c", data=str(root), **kw)).run()
    assert res.data["data"]["rng_device"] == "cpu"
    assert json.loads((tmp_path / "r" / "dev.cells" / "run.json").read_text())["rng_device"] == "cpu"
    import robustbench_augmix.evaluation.cache as cache

    monkeypatch.setattr(cache, "rng_device", lambda device: "cuda:NVIDIA H200")
    with pytest.raises(CacheMismatch, match=r"rng_device: cpu there, cuda:NVIDIA H200 now.*another device"):
        Evaluation(model, Config(suite="cifar10-c", data=str(root), **kw)).run()
    # Read from files, nothing is drawn: the device does not enter the identity.
    corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--out", str(tmp_path / "C"), "--corruptions",
                  "gaussian_noise", "--severities", "2"])
    off = dict(kw, name="off", source="official", clean_data=str(root))
    monkeypatch.setattr(cache, "rng_device", lambda device: "cpu")
    Evaluation(model, Config(suite="cifar10-c", data=str(tmp_path / "C"), **off)).run()
    monkeypatch.setattr(cache, "rng_device", lambda device: "cuda:NVIDIA H200")
    again = Evaluation(model, Config(suite="cifar10-c", data=str(tmp_path / "C"), **off)).run()
    assert again.data["resumed_image_cells"] == 2 * N and again.data["data"]["rng_device"] is None


def _tiny_imagenet_tree(root, classes: int = 200, filled=(0, 7, 123, 199), per_class: int = 2):
    """A Tiny-ImageNet-shaped val tree: one folder per class (n00000000 ...), JPEGs in a few of them."""
    from PIL import Image

    for c in range(classes):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True)
        if c in filled:
            for k in range(per_class):
                Image.fromarray(photo(c + k, 64)).save(d / f"val_{c}_{k}.JPEG", quality=90)
    return root


def test_tinyimagenet_c_with_a_200_class_model_end_to_end(tmp_path):
    """The class count comes from the suite table's [dataset] (200), not a fallback of 1000: --arch without
    --num-classes builds a 200-way head and loads a 200-class checkpoint; the run scores every cell."""
    import timm
    from safetensors.torch import save_file

    data = _tiny_imagenet_tree(tmp_path / "val")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=200)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    out = tmp_path / "res"
    assert _run(["--arch", "timm:resnet18", "--checkpoint", str(tmp_path / "r18.safetensors"), "--suite",
                 "tinyimagenet-c", "--data", str(data), "--corruptions", "fog,pixelate", "--severities", "1,5",
                 "--out", str(out), "--batch-size", "4"]) == 0
    doc = json.loads((out / "r18__tinyimagenet-c.json").read_text())
    assert doc["model"]["num_classes"] == 200 and doc["suite"]["dataset"] == "tinyimagenet"
    assert doc["data"]["n_images"] == 8 and len(doc["cells"]) == 5
    # The same numbers as a direct computation: corrupt, JPEG round trip (storage), model.
    from robustbench_augmix.corruptions.digital import jpeg_roundtrip_levels
    from robustbench_augmix.data.sources import open_source

    src = open_source(str(data), rba.load_suite("tinyimagenet-c"))
    x = torch.from_numpy(np.stack([src.read(i) for i in range(len(src))])).permute(0, 3, 1, 2)
    pre = rba.Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    net.eval()
    for cell in doc["cells"]:
        if cell["corruption"] == "clean":
            xc = x.float() / 255
        else:
            u8 = rba.corrupt(x, cell["corruption"], cell["severity"], suite="tinyimagenet-c")
            xc = jpeg_roundtrip_levels(u8, 85).float() / 255
        with torch.no_grad():
            pred = net(pre(xc)).argmax(1).numpy()
        assert cell["correct"] == int((pred == src.labels).sum()), cell["corruption"]
