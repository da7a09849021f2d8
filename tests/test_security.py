"""Security and data integrity (issue #21): nothing writes outside its folder, nothing runs from a data
file, no NaN is scored or ranked, official files are read only in their released form."""

from __future__ import annotations

import json
import os
import pickle
import textwrap

import numpy as np
import pytest
import torch
from conftest import photo, write_cifar

from robustbench_augmix.cli.corrupt import main as corrupt_main
from robustbench_augmix.cli.eval import main as eval_main
from robustbench_augmix.cli.leaderboard import main as board_main
from robustbench_augmix.cli.train import main as train_main
from robustbench_augmix.cli.zoo import main as zoo_main

FACTORY = textwrap.dedent("""
    import torch

    def build(nan=False):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10))
        if nan:
            with torch.no_grad():
                m[-1].weight[3, 2] = float("nan")
        return m

    def build_nan():
        return build(True)
""")


@pytest.fixture
def data(tmp_path):
    imgs = np.stack([photo(i % 5, 32) for i in range(12)])
    root = write_cifar(tmp_path / "cifar", imgs, [i % 10 for i in range(12)])
    factory = tmp_path / "tiny.py"
    factory.write_text(FACTORY)
    return root, factory


# ------------------------------------------------------------------------------------------- 1. cards
@pytest.mark.parametrize("file", ["../../evil.pth", "/tmp/evil.pth", ".hidden.pth", "sub/dir.pth"])
def test_a_cards_weights_file_name_cannot_leave_the_cache(tmp_path, capsys, monkeypatch, file):
    import torch.hub

    def no_network(*a, **k):
        raise AssertionError("downloaded before the name was checked")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    card = tmp_path / "evil.toml"
    card.write_text(textwrap.dedent(f"""
        id = "evil"
        name = "evil"
        dataset = "cifar10"
        num_classes = 10
        builder = "cifar:smallcnn"
        params = 1
        [weights]
        url = "https://example.org/w.pth"
        file = "{file}"
        sha256 = "{'0' * 64}"
        licence = "none"
        [preprocess]
        input_size = 32
        mean = [0.5, 0.5, 0.5]
        std = [0.5, 0.5, 0.5]
        [recipe]
        [reported]
    """))
    assert zoo_main(["download", str(card)]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert eval_main(["--model", str(card), "--suite", "cifar10-c", "--out", str(tmp_path / "r")]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "evil.pth").exists() and not list((tmp_path / "th").rglob("*.pth"))


def test_a_url_whose_file_name_is_not_plain_is_refused_before_any_download(monkeypatch, tmp_path):
    import torch.hub

    from robustbench_augmix._common import InputError
    from robustbench_augmix.zoo import get_card, resolve_weights

    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    card = get_card("resnet50")
    import dataclasses
    from types import MappingProxyType

    bad = dataclasses.replace(card, weights=MappingProxyType({**card.weights, "url": "https://example.org/..",
                                                               "file": None}))
    with pytest.raises(InputError, match="not a plain file name"):
        resolve_weights(bad)


# ------------------------------------------------------------------------------------------- 2. pickles
class _Payload:
    """Unpickling this writes a marker file: proof that the loader ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_poisoned_cifar_batch_never_runs_its_payload(tmp_path, capsys, data):
    root, factory = data
    marker = tmp_path / "PWNED"
    sub = root / "cifar-10-batches-py"
    with open(sub / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Payload(str(marker))}, f)
    for k in range(1, 6):
        (sub / f"data_batch_{k}").write_bytes((sub / "test_batch").read_bytes())
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--out", str(tmp_path / "C"),
                         "--corruptions", "fog"]) == 2
    assert "refused unread" in capsys.readouterr().err
    assert eval_main(["--model", f"{factory}:build", "--data", str(root), "--out", str(tmp_path / "r"),
                      "--no-progress"]) == 2
    assert "refused unread" in capsys.readouterr().err
    assert train_main(["--recipe", "cifar10-wrn40_2-augmix", "--data", str(root), "--out", str(tmp_path / "t"),
                       "--no-progress", "--epochs", "1"]) == 2
    assert "refused unread" in capsys.readouterr().err
    assert not marker.exists()


def test_the_restricted_unpickler_reads_real_layouts(tmp_path):
    """Protocol 2 (how Python 2 wrote the released files, bytes through _codecs.encode) and the current
    protocol both load."""
    from robustbench_augmix.data.sources import CifarSource

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    imgs = np.stack([photo(i, 32) for i in range(3)])
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4],
                     b"data": imgs.transpose(0, 3, 1, 2).reshape(3, -1), b"filenames": [b"a.png"] * 3}, f,
                    protocol=2)
    src = CifarSource.open(tmp_path, "cifar10")
    assert np.array_equal(src.images, imgs) and list(src.labels) == [3, 1, 4]


# ------------------------------------------------------------------------------------------- 3. names
@pytest.mark.parametrize("name", ["../escaped", "/tmp/rba-escaped-abs", "a/b", ".."])
def test_rb_eval_name_is_a_plain_file_name(tmp_path, capsys, data, name):
    root, factory = data
    out = tmp_path / "inside" / "out"
    assert eval_main(["--model", f"{factory}:build", "--data", str(root), "--out", str(out), "--name", name,
                      "--corruptions", "fog", "--severities", "1", "--no-progress"]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "inside" / "escaped.json").exists() and not os.path.exists("/tmp/rba-escaped-abs.json")
    assert not list(tmp_path.rglob("*.json"))


# ------------------------------------------------------------------------------------------- 9. NaN
def test_a_nan_model_is_refused_not_scored(tmp_path, capsys, data):
    root, factory = data
    out = tmp_path / "r"
    assert eval_main(["--model", f"{factory}:build_nan", "--data", str(root), "--out", str(out),
                      "--corruptions", "fog", "--severities", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-finite scores" in err and "12 of 12 images on clean" in err
    assert not list(out.glob("*.json"))


def test_json_is_strict_with_nulls_for_undefined_values(tmp_path):
    from robustbench_augmix._common import json_dump

    json_dump(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}}


def test_the_leaderboard_refuses_nan_and_incomplete_files(tmp_path, capsys, data):
    root, factory = data
    out = tmp_path / "r"
    assert eval_main(["--model", f"{factory}:build", "--data", str(root), "--out", str(out), "--corruptions",
                      "fog", "--severities", "1", "--no-progress", "--bootstrap", "0"]) == 0
    good = next(out.glob("*.json"))
    doc = json.loads(good.read_text())
    nan = tmp_path / "nan.json"
    nan.write_text(good.read_text().replace(f'"clean_error": {doc["aggregates"]["clean_error"]}',
                                            '"clean_error": NaN'))
    assert "NaN" in nan.read_text()
    assert board_main([str(nan), str(good)]) == 2
    assert "bare NaN" in capsys.readouterr().err
    for key in ("suite", "aggregates", "protocol"):
        broken = tmp_path / f"no-{key}.json"
        broken.write_text(json.dumps({k: v for k, v in doc.items() if k != key}))
        assert board_main([str(broken)]) == 2
        assert f"lacks {key}" in capsys.readouterr().err


def test_training_with_a_nan_learning_rate_is_refused(tmp_path, capsys):
    assert train_main(["--recipe", "digits-smallcnn-augmix", "--out", str(tmp_path / "t"), "--lr", "nan",
                       "--no-progress"]) == 2
    assert "lr = nan is not a usable value" in capsys.readouterr().err
    assert not (tmp_path / "t" / "model.safetensors").exists()


def test_a_diverging_training_run_stops_before_saving(tmp_path, monkeypatch):
    """A loss that becomes NaN (here: weights poisoned after the first step) stops the epoch with a clear
    error; no checkpoint or card of NaN weights is written."""
    from robustbench_augmix.train import TrainConfig, Trainer, TrainError, load_recipe

    recipe = load_recipe("digits-smallcnn-standard", epochs=1)
    t = Trainer(recipe, TrainConfig(out=str(tmp_path / "t"), progress=False, limit=96))
    orig = t.opt.step

    def poisoned_step(*a, **k):
        out = orig(*a, **k)
        with torch.no_grad():
            next(t.model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(t.opt, "step", poisoned_step)
    with pytest.raises(TrainError, match="the training loss became nan"):
        t.fit()
    assert not (tmp_path / "t" / "checkpoint.pt").exists() and not (tmp_path / "t" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------- 10. npy form
@pytest.mark.parametrize("dtype", [np.float64, np.int16])
def test_official_npy_files_must_have_the_released_form(tmp_path, capsys, data, dtype):
    root, factory = data
    c = tmp_path / "C"
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--out", str(c), "--corruptions", "fog"]) == 0
    arr = np.load(c / "fog.npy")
    np.save(c / "fog.npy", arr.astype(dtype))
    assert eval_main(["--model", f"{factory}:build", "--source", "official", "--data", str(c), "--clean-data",
                      str(root), "--corruptions", "fog", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert f"holds {np.dtype(dtype)} (60, 32, 32, 3); the released form" in capsys.readouterr().err
    np.save(c / "fog.npy", arr[:, :16])
    assert eval_main(["--model", f"{factory}:build", "--source", "official", "--data", str(c), "--clean-data",
                      str(root), "--corruptions", "fog", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "uint8 (60, 16, 32, 3)" in capsys.readouterr().err
