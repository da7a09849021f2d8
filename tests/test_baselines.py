"""The AugMix paper's baseline methods (robustbench_augmix.baselines), each checked against its definition
(Zhang et al. for Mixup, Yun et al. for CutMix, DeVries & Taylor for Cutout, torchvision's published
AutoAugment policy, Madry et al. for PGD), not against our own earlier output; then every method of the
grid through the trainer: it learns, it resumes bit for bit, and a bad method is refused before anything
is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_augmix.baselines import METHODS, get_method, kernels
from robustbench_augmix.baselines.adversarial import pgd_linf
from robustbench_augmix.baselines.policies import KeyedPolicy, build_policy
from robustbench_augmix.data.sources import ArraySource
from robustbench_augmix.data.training import digits
from robustbench_augmix.recipes import TrainError, load_recipe, recipes


def _batch(n=8, h=32, w=32, seed=0):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- Mixup
@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_is_the_convex_combination_with_the_seeded_beta_draw(alpha):
    x, y = _batch(), torch.arange(8) % 3
    draw = kernels.draw_mixup(np.random.default_rng(7), 8, alpha)
    ref = np.random.default_rng(7)  # the same stream, drawn by hand: lambda first, then the partners
    lam, perm = ref.beta(alpha, alpha), ref.permutation(8)
    assert draw.lam == lam and draw.perm.tolist() == perm.tolist()
    out = kernels.mixup(x, draw)
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[perm], rtol=0, atol=1e-6)
    # the loss is the cross-entropy against the labels mixed with the same lambda
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    soft = lam * F.one_hot(y, 3).double() + (1 - lam) * F.one_hot(y[perm], 3).double()
    expect = -(soft * F.log_softmax(logits.double(), 1)).sum(1).mean()
    assert float(kernels.mixed_cross_entropy(logits, y, draw)) == pytest.approx(float(expect), rel=1e-5)


# ------------------------------------------------------------------------------------------ CutMix
@pytest.mark.parametrize("seed", range(12))
def test_cutmix_box_has_the_drawn_area_and_the_label_weight_follows_the_pasted_box(seed):
    h, w = 32, 24
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, h, w).clone()  # image k is all k
    draw = kernels.draw_cutmix(np.random.default_rng(seed), 6, h, w, alpha=1.0, prob=1.0)
    ref = np.random.default_rng(seed)
    ref.random()  # the probability draw
    lam0 = ref.beta(1.0, 1.0)
    out = kernels.cutmix(x, draw)
    changed = (out != x).any(1)                                       # (N, H, W): pixels taken from a partner
    moved = [k for k in range(6) if draw.perm[k] != k]
    if not moved or draw.box is None:
        pytest.skip("the permutation left every image in place")
    k = moved[0]
    rows, cols = torch.nonzero(changed[k], as_tuple=True)
    area = int(changed[k].sum())
    if area:  # one axis-aligned rectangle, filled with the partner's pixels
        assert area == (int(rows.max()) - int(rows.min()) + 1) * (int(cols.max()) - int(cols.min()) + 1)
        assert torch.all(out[k][:, changed[k]] == float(draw.perm[k]))
    assert draw.lam == pytest.approx(1 - area / (h * w))              # the label weight of the pasted box
    t, left, b, r = draw.box
    side_h, side_w = int(h * np.sqrt(1 - lam0)), int(w * np.sqrt(1 - lam0))
    if 0 < t and b < h and 0 < left and r < w:                        # not clipped: (1 - lambda) up to rounding
        # rand_bbox truncates each side, then halves it around the centre: at most 2 px short on each axis
        exact_h, exact_w = h * np.sqrt(1 - lam0), w * np.sqrt(1 - lam0)
        assert 0 <= (1 - lam0) * h * w - area <= 2 * (exact_h + exact_w)
        assert (b - t, r - left) == (2 * (side_h // 2), 2 * (side_w // 2))


def test_cutmix_probability_skips_whole_batches():
    skipped = [kernels.draw_cutmix(np.random.default_rng(s), 4, 32, 32, 1.0, 0.5).box is None for s in range(400)]
    assert 0.4 < np.mean(skipped) < 0.6
    d = kernels.draw_cutmix(np.random.default_rng(0), 4, 32, 32, 1.0, 0.0)
    x = _batch(4)
    assert d.lam == 1.0 and torch.equal(kernels.cutmix(x, d), x)


# ------------------------------------------------------------------------------------------ Cutout
@pytest.mark.parametrize("centre", [(16, 16), (0, 0), (31, 5), (3, 30), (8, 31)])
@pytest.mark.parametrize("length", [8, 16])
def test_cutout_zeroes_exactly_one_clipped_square(centre, length):
    x = _batch(2) + 10.0  # no zeros anywhere before
    out = kernels.cutout(x, torch.tensor([centre, (16, 16)]), length)
    cy, cx = centre
    rows = range(max(0, cy - length // 2), min(32, cy + length // 2))   # DeVries & Taylor's np.clip box
    cols = range(max(0, cx - length // 2), min(32, cx + length // 2))
    expect = torch.zeros(32, 32, dtype=torch.bool)
    expect[rows.start:rows.stop, cols.start:cols.stop] = True
    for c in range(3):
        assert torch.equal(out[0, c] == 0, expect)
    assert int((out[1, 0] == 0).sum()) == length * length
    assert torch.equal(out[~(out == 0)], x[~(out == 0)])             # nothing else touched
    assert not (x == 0).any()                                         # the input is not written


# ------------------------------------------------------------------------------ AutoAugment & co
def test_autoaugment_uses_the_published_policies():
    from torchvision.transforms import v2

    for name, n in (("cifar10", 25), ("imagenet", 25)):
        p = build_policy("autoaugment", {"policy": name})
        assert p._policies == v2.AutoAugment(v2.AutoAugmentPolicy(name))._policies and len(p._policies) == n
    # Cubuk et al. 2019, appendix, the CIFAR-10 policy's first sub-policies: (Invert, 0.1) then (Contrast, 0.2, 6);
    # (Rotate, 0.7, 2) then (TranslateX, 0.3, 9)
    cifar = build_policy("autoaugment", {"policy": "cifar10"})._policies
    assert cifar[0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert cifar[1] == (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9))
    assert get_method("autoaugment").resolved_args("cifar100") == {"policy": "cifar10"}
    assert get_method("autoaugment").resolved_args("imagenet") == {"policy": "imagenet"}


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_keyed_policies_are_torchvisions_draw_under_the_images_key(policy):
    from PIL import Image

    img = digits("train").images[0]
    t = build_policy(policy, get_method(policy).resolved_args("cifar10"))
    keyed = KeyedPolicy(t)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    outs = [keyed(img, k) for k in range(12)]
    assert torch.equal(torch.get_rng_state(), before)                 # the caller's generator untouched
    for k in (0, 5):
        torch.manual_seed(k)                                          # the reference: torchvision, seeded by hand
        assert np.array_equal(outs[k], np.asarray(t(Image.fromarray(img))))
        torch.manual_seed(999)
        assert np.array_equal(keyed(img, k), outs[k])                 # whatever ran before
    assert len({o.tobytes() for o in outs}) > 3 and all(o.shape == img.shape for o in outs)


# --------------------------------------------------------------------------------------------- PGD
@pytest.fixture(scope="module")
def trained_digits():
    """A small model trained on the digits for a few hundred steps (a linear layer over 8x8 pooled pixels)."""
    d = digits("train")
    x = torch.from_numpy(d.images[:512]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.asarray(d.labels[:512])).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(3 * 64, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net((x - 0.5) / 0.5), y).backward()
        opt.step()
    assert (net((x - 0.5) / 0.5).argmax(1) == y).float().mean() > 0.8
    opt.zero_grad(set_to_none=True)
    return net.eval(), x[:64], y[:64]


def test_pgd_stays_in_the_ball_and_the_image_range_and_raises_the_loss(trained_digits):
    net, x01, y = trained_digits
    mean, std, eps = (0.5,) * 3, (0.5,) * 3, 8 / 255
    xn = (x01 - 0.5) / 0.5
    adv = pgd_linf(net, xn, y, mean=mean, std=std, epsilon=eps, step_size=2 / 255, steps=7,
                   generator=torch.Generator().manual_seed(0))
    a01 = adv * 0.5 + 0.5
    assert float((a01 - x01).abs().max()) <= eps + 1e-6
    assert float(a01.min()) >= -1e-6 and float(a01.max()) <= 1 + 1e-6
    rand = (x01 + torch.empty_like(x01).uniform_(-eps, eps, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    with torch.no_grad():
        l_adv = F.cross_entropy(net(adv), y)
        l_rand = F.cross_entropy(net((rand - 0.5) / 0.5), y)
        l_clean = F.cross_entropy(net(xn), y)
    assert l_adv > 3 * l_rand and l_adv > 3 * l_clean  # 8/255 moves a linear model's loss several-fold
    assert not any(p.grad is not None for p in net.parameters())     # the attack leaves .grad alone


def test_pgd_holds_batch_norm_statistics_still():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.LazyLinear(10)).train()
    x = _batch(4, 8, 8)
    net(x)
    bn = net[1]
    saved = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    pgd_linf(net, x, torch.arange(4), mean=(0.5,) * 3, std=(0.5,) * 3, epsilon=0.03, step_size=0.01, steps=3,
             generator=torch.Generator().manual_seed(0))
    assert torch.equal(bn.running_mean, saved[0]) and torch.equal(bn.running_var, saved[1])
    assert int(bn.num_batches_tracked) == saved[2] and bn.momentum == 0.1


# ------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_a_digits_recipe_and_its_constants_are_cited(name):
    m = get_method(name)
    assert m.source and m.label and m.summary
    r = load_recipe(f"digits-smallcnn-{name}")
    assert r.method == name and set(r.method_args) == set(m.args)
    assert (m.batch != "") + (m.policy != "") + (m.views != "one") <= 1  # one augmentation per method


def test_unknown_and_uncombinable_methods_are_refused():
    with pytest.raises(TrainError, match=r"unknown training method 'mixpu'; did you mean mixup.*valid: standard"):
        load_recipe("digits-smallcnn-augmix", method="mixpu")
    with pytest.raises(TrainError, match="no variant without the JSD loss"):
        load_recipe("digits-smallcnn-jsd-simple", jsd=False)
    with pytest.raises(TrainError, match="no constants"):
        load_recipe("digits-smallcnn-mixup", method_args={"beta": 2.0})
    assert load_recipe("digits-smallcnn-augmix", jsd=False).method == "augmix-nojsd"
    assert load_recipe("digits-smallcnn-augmix", augmix=False, jsd=False).method == "standard"
    assert load_recipe("digits-smallcnn-augmix", method="cutmix").method_args == {"alpha": 1.0, "prob": 0.5}


def test_rb_train_refuses_a_bad_method_before_writing(tmp_path, capsys):
    from robustbench_augmix.cli.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--recipe", "digits-smallcnn-augmix", "--method", "cutmx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "did you mean cutmix" in err and "valid:" in err and not out.exists()


# ---------------------------------------------------------------------------- through the trainer
def _tiny(n, split="train"):
    d = digits(split)
    return ArraySource(d.images[:n], d.labels[:n], d.classes)


GRID_METHODS = sorted({load_recipe(n).method for n in recipes() if n.startswith(("cifar10-wrn40_2-", "imagenet-"))})


@pytest.mark.parametrize("method", sorted(set(GRID_METHODS) | set(METHODS)))
def test_every_grid_method_trains_and_resumes_bit_for_bit(tmp_path, method):
    """Two epochs of every method (those of the paper's grids and the rest of the table) on 192 digits lower the
    training loss; an interrupted run resumed from its checkpoint ends with the weights of the uninterrupted
    one."""
    from robustbench_augmix.train import TrainConfig, Trainer

    r = load_recipe(f"digits-smallcnn-{method}", epochs=2, batch_size=16)
    kw = {"progress": False, "threads": 1}
    full = Trainer(r, TrainConfig(out=str(tmp_path / "full"), **kw), train_set=_tiny(192), test_set=_tiny(64, "test"))
    x = torch.stack([full.pre(a) for a in full.ds.base.source.images])
    yy = torch.as_tensor(full.ds.base.labels)

    def loss(t):
        t.model.eval()
        with torch.no_grad():
            return float(F.cross_entropy(t.model(x), yy))

    before = loss(full)
    full.fit()
    assert loss(full) < before - 0.05, method
    part = Trainer(r, TrainConfig(out=str(tmp_path / "part"), stop_after=1, **kw), train_set=_tiny(192),
                   test_set=_tiny(64, "test"))
    part.fit()
    resumed = Trainer(r, TrainConfig(out=str(tmp_path / "part"), resume=True, **kw), train_set=_tiny(192),
                      test_set=_tiny(64, "test"))
    assert resumed.epoch == 1
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), method


# ---------------------------------------------------------------------------- the paper's layout
def test_trained_grid_methods_land_in_the_papers_table_beside_its_numbers(tmp_path, capsys):
    """rb-train runs of three cells of Table 1 (WRN-40-2 on a fabricated CIFAR-10, one epoch of 32 images),
    rb-eval of each, then rb-leaderboard --layout paper: one row (WideResNet), one column per method, each
    cell the measured error beside Table 1's number (26.9, 22.3, 11.2) and their difference."""
    import re

    from conftest import write_cifar_train

    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.cli.leaderboard import main as board_main
    from robustbench_augmix.cli.train import main as train_main

    data = write_cifar_train(tmp_path / "c")
    files = []
    for method in ("standard", "mixup", "augmix"):
        run = tmp_path / f"wrn-{method}"
        assert train_main(["--recipe", f"cifar10-wrn40_2-{method}", "--epochs", "1", "--batch-size", "16",
                           "--limit", "32", "--data", str(data), "--out", str(run), "--no-progress",
                           "--threads", "1"]) == 0
        assert eval_main(["--model", str(run / "card.toml"), "--data", str(data), "--out", str(tmp_path / "res"),
                          "--corruptions", "fog,contrast", "--severities", "3", "--no-progress", "--bootstrap", "0",
                          "--limit", "20"]) == 0
        files += sorted((tmp_path / "res").glob(f"wrn-{method}*.json"))
    assert len(files) == 3
    capsys.readouterr()
    assert board_main([*map(str, files), "--allow-mixed", "--layout", "paper", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("|  |"))
    assert [c.strip() for c in head.strip("|").split("|")][1:] == ["Standard", "Mixup", "AugMix"]
    row = next(line for line in out.splitlines() if line.startswith("| WideResNet"))
    docs = [json.loads(f.read_text()) for f in files]
    measured = [100 * d["aggregates"]["mean_corruption_error"] for d in docs]
    cells = re.findall(r"([\d.]+) \(([\d.]+), ([+-][\d.]+)\)", row)
    assert [float(r) for _, r, _ in cells] == [26.9, 22.3, 11.2]
    for (m, r, d), want in zip(cells, measured, strict=True):
        assert float(m) == pytest.approx(want, abs=0.006) and float(d) == pytest.approx(want - float(r), abs=0.011)
    assert board_main([*map(str, files), "--allow-mixed", "--layout", "paper", "--format", "latex"]) == 0
    assert r"\begin{tabular}" in capsys.readouterr().out
    html = tmp_path / "r.html"
    assert board_main([*map(str, files), "--allow-mixed", "--layout", "paper", "--format", "html", "--out",
                       str(html)]) == 0
    assert "the layout of AugMix Table 1" in html.read_text()


def test_rb_bench_methods_times_every_method(tmp_path, capsys):
    """The table has a row per method with its cost, its step (three views for the JSD methods) and the
    share; timings themselves are benchmark figures (docs/performance.md), not asserted here."""
    from robustbench_augmix.cli.bench import main as bench_main

    out = tmp_path / "m.json"
    assert bench_main(["methods", "--model", "cifar:smallcnn", "--sizes", "32", "--batch", "8", "--min-time", "0.01",
                       "--markdown", "--json", str(out), "--threads", "1"]) == 0
    res = json.loads(out.read_text())
    assert [r["method"] for r in res["rows"]] == list(METHODS)
    for r in res["rows"]:
        m = METHODS[r["method"]]
        assert r["step_ms"] == (res["jsd_step_ms"] if m.jsd else res["step_ms"])
        assert r["share"] == pytest.approx(r["cost_ms"] / (r["cost_ms"] + r["step_ms"]))
    assert "| adversarial |" in capsys.readouterr().out
    assert bench_main(["methods", "--methods", "mixup,cutmx"]) == 2
    assert "did you mean cutmix" in capsys.readouterr().err


def test_imagenet_results_take_table2s_layout_with_its_row_beside_them():
    """An ImageNet-C result of the MaxBlur card: one row, the clean error, 15 CEs and the mCE, each beside
    Table 2's 'MaxBlur pool' row (clean 23.0, Gaussian noise 73, ..., mCE 73.4)."""
    from robustbench_augmix.corruptions import load_suite
    from robustbench_augmix.report import Board
    from robustbench_augmix.report.paper import paper_table, table_to_markdown

    names = load_suite("imagenet-c").names()
    row = {"model": "resnet50_maxblur", "source": "measured", "file": "r.json", "clean_error": 23.5, "mce": 74.0,
           "mean_corruption_error": 55.0, "per_corruption": {c: 70.0 + i for i, c in enumerate(names)}}
    doc = {"_path": "r.json", "suite": {"id": "imagenet-c"}, "model": {"id": "resnet50_maxblur",
                                                                      "card": "resnet50_maxblur"}}
    t = paper_table(Board(protocol="p", rows=[row], corruptions=names), [doc])
    assert t.rows == ["resnet50_maxblur"] and t.columns == ["clean err", *names, "mCE"] and not t.mean_row
    assert t.cells[("resnet50_maxblur", "clean err")] == (23.5, 23.0, 1)
    assert t.cells[("resnet50_maxblur", "gaussian_noise")] == (70.0, 73, 1)
    assert t.cells[("resnet50_maxblur", "jpeg_compression")] == (84.0, 71, 1)
    assert t.cells[("resnet50_maxblur", "mCE")] == (74.0, 73.4, 1)
    assert "| resnet50_maxblur | 23.50 (23, +0.50) | 70.00 (73, -3.00)" in table_to_markdown(t)
