"""rb-demo end to end, reduced: train both variants, corrupt the digits, evaluate from the files, report."""

from __future__ import annotations

import json
import pickle

import numpy as np

from robustbench_augmix.cli.demo import main
from robustbench_augmix.data.training import digits


def test_digits_are_real_and_split_without_overlap():
    tr, te = digits("train"), digits("test")
    assert tr.images.shape[1:] == (32, 32, 3) and tr.images.dtype == np.uint8
    assert len(tr) + len(te) == 1797 and abs(len(te) - 539) <= 1          # sklearn's 1,797 digits, 30 % test
    assert set(np.unique(tr.labels)) == set(range(10)) == set(np.unique(te.labels))
    flat = {a.tobytes() for a in te.images}
    assert sum(a.tobytes() in flat for a in tr.images) < 5                  # (a few digits are drawn identically)
    assert (tr.images[..., 0] == tr.images[..., 2]).all() and tr.images.max() == 255


def test_demo_end_to_end_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["--out", str(out), "--epochs", "1", "--train-limit", "128", "--test-limit", "60",
               "--corruptions", "gaussian_noise,fog,frost", "--severities", "1,3", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "standard" in printed and "augmix" in printed and "lowered the corruption error in" in printed
    assert "mixup minus standard" in printed and "augmix minus standard" in printed
    assert "the layout of AugMix Table 1" in printed                  # the grid: one row, a column per method
    assert "Standard" in printed and "Mixup" in printed and "AugMix" in printed
    # the corrupted test split in the CIFAR-10-C layout, with the clean split beside it
    c = out / "DIGITS-C"
    assert np.load(c / "fog.npy").shape == (2 * 60, 32, 32, 3) and np.load(c / "labels.npy").shape == (120,)
    with open(out / "data" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        assert len(pickle.load(f)[b"labels"]) == 60
    docs = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    assert sorted(d["model"]["id"] for d in docs) == ["digits-smallcnn-augmix-seed0", "digits-smallcnn-mixup-seed0",
                                                      "digits-smallcnn-standard-seed0"]
    for d in docs:
        assert d["data"]["source"] == "official" and d["data"]["n_images"] == 60
        assert set(d["aggregates"]["corruption_error"]) == {"gaussian_noise", "fog", "frost"}
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| standard", "| mixup", "| augmix"))]
    assert len(rows) == 6 and all(r.count("|") >= 5 for r in rows)
    grid = next(line for line in report.splitlines() if line.startswith("| smallcnn"))
    assert grid.count("|") == 5                                     # the network, then standard, Mixup, AugMix
    html = (out / "report.html").read_text()      # the comparison over seeds is in the HTML page too
    assert "Standard vs Mixup vs AugMix" in html and "Over 1 training seed" in html
    assert "the layout of AugMix Table 1" in html
    for variant in ("standard", "mixup", "augmix"):          # the seeds column: one seed for each training
        assert f'data-v="{variant}">{variant}</td><td class="num" data-v="1">1</td>' in html
    # an unknown method is refused before anything is trained, with the valid ones
    assert main(["--out", str(tmp_path / "bad"), "--methods", "standard,mixpu", "--no-progress"]) == 2
    assert "valid: standard, cutout" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    # a second run reuses the finished runs and the generated files
    assert main(["--out", str(out), "--epochs", "1", "--train-limit", "128", "--test-limit", "60",
                 "--corruptions", "gaussian_noise,fog,frost", "--severities", "1,3", "--no-progress"]) == 0
