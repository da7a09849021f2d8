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
from conftest import card_toml, photo, write_cifar

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
    card.write_text(card_toml("evil", weights=f'url = "https://example.org/w.pth"\nfile = "{file}"\n'
                                              f'sha256 = "{"0" * 64}"\nlicence = "none"'))
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
@pytest.mark.parametrize("name", ["../escaped", "ABSOLUTE", "a/b", ".."])
def test_rb_eval_name_is_a_plain_file_name(tmp_path, capsys, data, name):
    root, factory = data
    name = str(tmp_path / "abs-escaped") if name == "ABSOLUTE" else name
    out = tmp_path / "inside" / "out"
    assert eval_main(["--model", f"{factory}:build", "--data", str(root), "--out", str(out), "--name", name,
                      "--corruptions", "fog", "--severities", "1", "--no-progress"]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "inside" / "escaped.json").exists() and not (tmp_path / "abs-escaped.json").exists()
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


# ------------------------------------------------------------------------------------------- 5. data identity
def test_other_data_with_the_same_labels_does_not_reuse_the_cache(tmp_path, capsys, data):
    root, factory = data
    imgs = np.stack([photo((i + 2) % 5, 32) for i in range(12)])  # other images, same labels
    other = write_cifar(tmp_path / "other", imgs, [i % 10 for i in range(12)])
    args = ["--model", f"{factory}:build", "--out", str(tmp_path / "r"), "--corruptions", "fog", "--severities", "1",
            "--no-progress", "--bootstrap", "0", "--name", "run"]
    assert eval_main([*args, "--data", str(root)]) == 0
    doc = json.loads((tmp_path / "r" / "run.json").read_text())
    assert doc["data"]["fingerprint"].startswith("clean=sha256:")
    assert eval_main([*args, "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "data: clean=sha256" in err and "not the ones the cells were computed from" in err
    # rb-corrupt: the same refusal instead of a manifest naming the new folder over the old files
    c_args = ["--suite", "cifar10-c", "--out", str(tmp_path / "C"), "--corruptions", "contrast"]
    assert corrupt_main([*c_args, "--data", str(root)]) == 0
    manifest = (tmp_path / "C" / "manifest.json").read_text()
    assert corrupt_main([*c_args, "--data", str(other)]) == 2
    assert "source_fingerprint: sha256" in capsys.readouterr().err
    assert (tmp_path / "C" / "manifest.json").read_text() == manifest


def test_a_retouched_image_tree_reads_as_other_data(tmp_path):
    from PIL import Image

    from robustbench_augmix.data.sources import ImageFolderSource, fingerprint

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for k in range(2):
            Image.fromarray(photo(k, 40)).save(tmp_path / c / f"{k}.png")
    before = fingerprint(ImageFolderSource.open(tmp_path, 32, False))
    assert fingerprint(ImageFolderSource.open(tmp_path, 32, False)) == before
    Image.fromarray(photo(3, 40)).save(tmp_path / "b" / "1.png")
    os.utime(tmp_path / "b" / "1.png", ns=(1, 1))
    assert fingerprint(ImageFolderSource.open(tmp_path, 32, False)) != before


# ------------------------------------------------------------------------------------------- 4. foreign files
def test_rb_corrupt_never_overwrites_or_adopts_files_it_did_not_write(tmp_path, capsys, data):
    root, _ = data
    out = tmp_path / "C"
    out.mkdir()
    fog = np.full((60, 32, 32, 3), 7, np.uint8)
    np.save(out / "fog.npy", fog)                                   # a real CIFAR-10-C file, say
    np.save(out / "labels.npy", np.zeros(60, np.uint8))             # with the wrong labels
    args = ["--suite", "cifar10-c", "--data", str(root), "--out", str(out), "--corruptions", "fog"]
    assert corrupt_main(args) == 2
    err = capsys.readouterr().err
    assert "2 file(s) that this run did not write" in err and "fog.npy" in err and "labels.npy" in err
    assert np.array_equal(np.load(out / "fog.npy"), fog) and not (out / "manifest.json").exists()
    # explicitly allowed: replaced (both), never adopted
    assert corrupt_main([*args, "--allow-existing"]) == 0
    assert not np.array_equal(np.load(out / "fog.npy"), fog)
    assert list(np.load(out / "labels.npy")[:12]) == [i % 10 for i in range(12)]
    # our own files resume without complaint
    assert corrupt_main(args) == 0


def test_an_unrelated_image_at_a_target_path_is_not_taken_as_done(tmp_path, capsys, folder_root):
    from PIL import Image

    out = tmp_path / "F"
    target = out / "contrast" / "1" / "n01"
    target.mkdir(parents=True)
    first = sorted((folder_root / "n01").iterdir())[0]
    Image.new("RGB", (64, 64), "red").save(target / (first.stem + ".JPEG"))
    args = ["--suite", "tinyimagenet-c", "--data", str(folder_root), "--out", str(out), "--corruptions", "contrast",
            "--severities", "1"]
    assert corrupt_main(args) == 2
    assert "did not write" in capsys.readouterr().err
    assert corrupt_main([*args, "--allow-existing"]) == 0
    with Image.open(target / (first.stem + ".JPEG")) as im:
        assert np.asarray(im.convert("RGB")).std() > 0  # replaced by the corrupted photograph
    man = json.loads((out / "manifest.json").read_text())
    assert f"contrast/1/n01/{first.stem}.JPEG" in man["files"]


# ------------------------------------------------------------------------------------------- 6. reruns
def test_a_failed_first_run_does_not_block_the_corrected_rerun(tmp_path, capsys, data):
    root, factory = data
    two = FACTORY + "\ndef build2():\n    m = build()\n    m[-1] = torch.nn.Linear(8, 2)\n    return m\n"
    (factory.parent / "two.py").write_text(two)
    args = ["--data", str(root), "--out", str(tmp_path / "r"), "--name", "run", "--corruptions", "fog",
            "--severities", "1", "--no-progress", "--bootstrap", "0"]
    assert eval_main(["--model", f"{factory.parent / 'two.py'}:build2", *args]) == 2  # 2 outputs for 10 classes
    assert "10 classes" in capsys.readouterr().err
    assert (tmp_path / "r" / "run.cells" / "run.json").exists()
    assert eval_main(["--model", f"{factory}:build", *args]) == 0


def test_out_inside_the_data_folder_is_refused(tmp_path, capsys, folder_root):
    args = ["--suite", "tinyimagenet-c", "--data", str(folder_root), "--corruptions", "contrast", "--severities", "1"]
    assert corrupt_main([*args, "--out", str(folder_root / "C")]) == 2
    assert "is inside --data" in capsys.readouterr().err
    assert not (folder_root / "C").exists()
    factory = tmp_path / "f.py"
    factory.write_text(FACTORY.replace("torch.nn.Linear(8, 10)", "torch.nn.Linear(8, 2)"))
    assert eval_main(["--model", f"{factory}:build", *args, "--out", str(folder_root / "results"),
                      "--no-progress"]) == 2
    assert "inside the data folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- 7. skip + shards
def test_skipping_shards_end_in_a_complete_manifest(tmp_path, capsys, folder_root):
    bad = sorted((folder_root / "n02").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated: every shard that owns it skips it
    out = tmp_path / "S"
    args = ["--suite", "tinyimagenet-c", "--data", str(folder_root), "--out", str(out), "--corruptions", "contrast",
            "--severities", "1,2", "--on-error", "skip"]
    assert corrupt_main([*args, "--shard", "0/2"]) == 0
    assert not (out / "manifest.json").exists()
    assert corrupt_main([*args, "--shard", "1/2"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    rel = f"n02/{bad.name}"
    assert man["skipped"] == {"contrast/1": [rel], "contrast/2": [rel]}
    n_src = sum(1 for p in folder_root.rglob("*") if p.is_file())
    assert len(man["files"]) == 2 * (n_src - 1)


# ------------------------------------------------------------------------------------------- 11. storage
@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root and mount(8) needed; skipped otherwise), unmounted afterwards."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_with_the_space_needed_and_resumes(tmp_path, capsys, data, small_disk):
    import subprocess

    root, _ = data
    names = "gaussian_noise,shot_noise,impulse_noise,contrast,fog,brightness,pixelate"
    args = ["--suite", "cifar10-c", "--data", str(root), "--corruptions", names]
    assert corrupt_main([*args, "--out", str(small_disk / "C")]) == 2
    err = capsys.readouterr().err
    # 7 arrays of 60 x 32 x 32 x 3 bytes and the labels: 1.23 MiB
    assert "is full" in err and "needs about 1.2 MiB in all" in err and "Traceback" not in err
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".part")], "a partial file was left"
    for f in (small_disk / "C").glob("*.npy"):  # whatever is there is complete
        np.load(f)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert corrupt_main([*args, "--out", str(small_disk / "C")]) == 0
    assert corrupt_main([*args, "--out", str(tmp_path / "ref")]) == 0
    for n in names.split(","):
        assert np.array_equal(np.load(small_disk / "C" / f"{n}.npy"), np.load(tmp_path / "ref" / f"{n}.npy")), n


def test_a_read_only_out_is_one_line(tmp_path, capsys, data, small_disk):
    import subprocess

    root, factory = data
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--corruptions", "fog", "--out",
                         str(small_disk / "C")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert eval_main(["--model", f"{factory}:build", "--data", str(root), "--corruptions", "fog", "--out",
                      str(small_disk / "r"), "--no-progress"]) == 2
    assert "not writable" in capsys.readouterr().err


def test_out_that_is_a_file_is_one_line(tmp_path, capsys, data):
    root, factory = data
    f = tmp_path / "afile"
    f.write_text("x")
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--corruptions", "fog", "--out", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert eval_main(["--model", f"{factory}:build", "--data", str(root), "--corruptions", "fog", "--out", str(f),
                      "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert train_main(["--recipe", "digits-smallcnn-standard", "--out", str(f), "--no-progress", "--epochs",
                       "1"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"


# ------------------------------------------------------------------------------------------- 12. smaller
@pytest.mark.parametrize("size", [2, 3, 4, 7])
def test_images_below_the_minimum_size_are_refused_clearly(size):
    import robustbench_augmix as rba
    from robustbench_augmix._common import InputError

    for img in (torch.rand(1, 3, size, 40), np.zeros((40, size, 3), np.uint8)):
        with pytest.raises(InputError, match="at least 8x8 pixels"):
            rba.corrupt(img, "glass_blur", 5, suite="imagenet-c")


def test_every_corruption_handles_the_minimum_size():
    import robustbench_augmix as rba
    from robustbench_augmix.corruptions import MIN_IMAGE_SIZE

    for suite in ("imagenet-c", "cifar10-c", "tinyimagenet-c"):
        for name in rba.corruption_names(suite, extra=True):
            for sev in range(1, 6):
                for shape in ((MIN_IMAGE_SIZE, MIN_IMAGE_SIZE), (MIN_IMAGE_SIZE, 21), (21, MIN_IMAGE_SIZE)):
                    y = rba.corrupt(torch.rand(1, 3, *shape), name, sev, suite=suite)
                    assert y.shape == (1, 3, *shape)


def test_rb_train_prints_an_rb_eval_command_that_rb_eval_accepts(tmp_path, capsys):
    """For a digits recipe the hint is the checkpoint route on the corrupted digits rb-demo writes."""
    from robustbench_augmix import demo
    from robustbench_augmix.generate import Generator, Plan

    out = tmp_path / "runs" / "d"
    assert train_main(["--recipe", "digits-smallcnn-standard", "--out", str(out), "--epochs", "1", "--limit", "64",
                       "--no-progress"]) == 0
    hint = capsys.readouterr().err.split("evaluate it: ", 1)[1].split(" (both written")[0].split()
    assert hint[0] == "rb-eval"
    clean = demo.write_test_split(tmp_path / "rb-demo" / "data", limit=20)
    Generator(Plan(suite="cifar10-c", data=str(clean), out=str(tmp_path / "rb-demo" / "DIGITS-C"),
                   corruptions=["fog"], severities=(1,))).run()
    args = [a.replace("rb-demo/", str(tmp_path / "rb-demo") + "/") for a in hint[1:]]
    assert eval_main([*args, "--corruptions", "fog", "--severities", "1", "--out", str(tmp_path / "r"),
                      "--no-progress", "--bootstrap", "0"]) == 0
