"""Model cards: the schema over every card, every builder, parameter counts, weights resolution from a
file and from a populated cache (no network), the offline error, and a card through rb-eval."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from robustbench_augmix import zoo
from robustbench_augmix.cli.eval import main as eval_main
from robustbench_augmix.cli.zoo import main as zoo_main
from robustbench_augmix.models import build

CARDS = zoo.cards()


def test_cards_exist_and_ids_are_unique():
    ids = [c.id for c in CARDS]
    assert len(ids) == len(set(ids))
    assert {"alexnet", "resnet50", "resnet50_augmix", "wrn40_2_augmix_cifar10"} <= set(ids)


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.id)
def test_every_card_builds_runs_and_counts_its_parameters(card):
    m = build(card.builder, num_classes=card.num_classes, **dict(card.builder_args)).eval()
    assert sum(p.numel() for p in m.parameters()) == card.params
    size = int(card.preprocess["input_size"])  # vision transformers take only their own size
    with torch.no_grad():
        assert m(torch.rand(2, 3, size, size)).shape == (2, card.num_classes)
    assert card.reported.get("citation"), "reported numbers need a citation"
    assert card.weights.get("licence")
    if card.has_weights and card.weights.get("url"):
        assert card.weights.get("sha256") or card.weights.get("sha256_prefix")


def test_card_schema_errors_name_the_field():
    raw = {"id": "x", "name": "x", "dataset": "mnist", "num_classes": 10, "builder": "cifar:wrn40_2", "params": 1,
           "weights": {"licence": "MIT"}, "preprocess": {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
           "recipe": {}, "reported": {}}
    with pytest.raises(ValueError, match="dataset 'mnist'"):
        zoo.parse_card(raw, "x.toml")
    with pytest.raises(ValueError, match="citation"):
        zoo.parse_card({**raw, "dataset": "cifar10", "reported": {"clean_error": 5.0}}, "x.toml")
    with pytest.raises(ValueError, match="lacks"):
        zoo.parse_card({k: v for k, v in raw.items() if k != "recipe"}, "x.toml")


def _tiny_card(tmp_path, weights_file):
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    text = f'''id = "tiny_wrn"
name = "test card"
dataset = "cifar10"
num_classes = 10
builder = "cifar:wrn40_2"
params = 2243546
[weights]
url = "https://example.invalid/{weights_file.name}"
file = "{weights_file.name}"
sha256_prefix = "{digest[:8]}"
licence = "test"
[preprocess]
input_size = 32
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
[recipe]
text = "none"
[reported]
'''
    path = tmp_path / "tiny_wrn.toml"
    path.write_text(text)
    return zoo.get_card(str(path))


def test_weights_from_file_cache_and_the_offline_error(tmp_path, monkeypatch):
    from robustbench_augmix.models.cifar import wrn40_2

    model = wrn40_2()
    src = tmp_path / "tiny_wrn-weights.pth"
    torch.save(model.state_dict(), src)
    card = _tiny_card(tmp_path, src)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert zoo.resolve_weights(card, src) == src                                   # explicit path first
    with pytest.raises(zoo.WeightsMissing, match=r"tiny_wrn-weights.pth.*torch/hub/checkpoints.*--weights"):
        zoo.resolve_weights(card)                                                  # offline and not cached
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / src.name).write_bytes(src.read_bytes())
    assert zoo.resolve_weights(card) == cache / src.name                           # found in the cache
    m, pre, info = zoo.load_model(card)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), model.state_dict().values(), strict=True))
    assert pre.mean == (0.5, 0.5, 0.5) and info["weights_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    (cache / src.name).write_bytes(b"corrupt")
    with pytest.raises(zoo.WeightsMissing, match="does not match"):
        zoo.resolve_weights(card)


def test_a_card_through_rb_eval(tmp_path, cifar_root):
    from safetensors.torch import save_file

    from robustbench_augmix.models.cifar import wrn40_2

    root, _ = cifar_root
    w = tmp_path / "w.safetensors"
    save_file(wrn40_2().state_dict(), str(w))
    card = _tiny_card(tmp_path, w)
    out = tmp_path / "res"
    assert eval_main(["--model", card.path, "--weights", str(w), "--data", str(root), "--corruptions", "fog",
                      "--severities", "1", "--out", str(out), "--no-progress", "--bootstrap", "20"]) == 0
    doc = json.loads((out / "tiny_wrn__cifar10-c.json").read_text())
    assert doc["model"]["id"] == "tiny_wrn" and doc["model"]["weights_sha256"]
    assert doc["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    # A CIFAR card on ImageNet-C is refused.
    assert eval_main(["--model", card.path, "--weights", str(w), "--suite", "imagenet-c", "--data", str(tmp_path),
                      "--out", str(out)]) == 2


def test_rb_zoo_list_and_show(capsys):
    assert zoo_main(["list", "resnet*"]) == 0
    outp = capsys.readouterr().out
    assert "resnet50_augmix" in outp and "wrn40_2" not in outp
    assert zoo_main(["show", "resnet50_augmix"]) == 0
    assert "timm/resnet50.am_in1k" in capsys.readouterr().out
    assert zoo_main(["show", "wrn40_2_standard_cifar10"]) == 0
    shown = capsys.readouterr().out
    assert "[weights]" in shown and "[reported]" in shown  # section names are text, not rich markup
    assert "rb-train --recipe cifar10-wrn40_2-standard" in shown
    assert zoo_main(["show", "resnet50_augmx"]) == 2
    assert "did you mean" in capsys.readouterr().err


TRAINABLE = [c for c in CARDS if c.weights.get("train_recipe")]


@pytest.mark.parametrize("card", TRAINABLE, ids=lambda c: c.id)
def test_cards_without_weights_name_a_recipe_that_reproduces_them(card):
    """A card whose weights rb-train produces names a recipe of the same network, data and preprocessing,
    and that recipe names the card back (its reported numbers go into the trained card)."""
    from robustbench_augmix.train import load_recipe

    r = load_recipe(card.weights["train_recipe"])
    assert (r.arch, r.dataset, r.card) == (card.builder, card.dataset, card.id)
    assert (r.input_size, list(r.mean), list(r.std)) == (card.preprocess["input_size"], list(card.preprocess["mean"]),
                                                         list(card.preprocess["std"]))
    assert card.recipe.get("id") == r.id and r.text in card.recipe["text"]
    assert card.id.replace(f"_{card.dataset}", "").endswith("_" + r.method.replace("-", "_"))
    if "densenet" in card.builder:  # the issue asks the card to say how the code's DenseNet differs from the paper
        assert "DenseNet-BC" in card.note and "no bottleneck" in card.note
    with pytest.raises(zoo.WeightsMissing, match=rf"rb-train --recipe {r.id} ") as e:
        zoo.resolve_weights(card)
    assert "--weights PATH" in str(e.value)
    if card.weights.get("manual_url"):  # the released files RobustBench links: named, fetched by hand
        assert f"by hand from {card.weights['manual_url']}" in str(e.value)


def test_every_recipe_card_exists():
    from robustbench_augmix.train import load_recipe, recipes

    linked = {load_recipe(n).card: n for n in recipes() if load_recipe(n).card}
    assert set(linked) == {c.id for c in TRAINABLE}
    # AugMix Table 1: four networks x seven methods (Standard ... AugMix) x CIFAR-10/100; Table 2: the ResNet-50
    # rows Standard, AutoAugment*, Random AA*, AugMix
    assert len(linked) == 56 + 4


def test_grid_recipes_differ_from_augmix_only_in_the_method():
    import dataclasses

    from robustbench_augmix.train import load_recipe, recipes

    cells = [n for n in recipes() if n.startswith("cifar") and not n.endswith("-augmix")]
    assert len(cells) == 8 * 8  # 8 (network, dataset) pairs x the 8 methods beside AugMix
    for name in cells:
        aug = "-".join(name.split("-")[:2]) + "-augmix"
        s, a = load_recipe(name), load_recipe(aug)
        diff = {f.name for f in dataclasses.fields(s) if getattr(s, f.name) != getattr(a, f.name)}
        assert diff <= {"id", "augmix", "jsd", "card", "method", "method_args"} and "method" in diff


# The paper's Table 1 "Mean" rows (shared/reference/augmix.md 4.2), typed from the paper apart from the cells:
# each column of the grid's cells must average to them (to the table's rounding).
PAPER_MEANS = {
    ("mean_corruption_error", "cifar10"): [29.0, 30.2, 23.5, 30.3, 26.0, 27.2],
    ("mean_corruption_error", "cifar100"): [55.6, 56.1, 52.6, 55.5, 52.5, 55.2],
    ("clean_error", "cifar10"): [5.4, 4.9, 4.9, 5.0, 5.0, 17.3],
}


@pytest.mark.parametrize("key", sorted(PAPER_MEANS), ids="-".join)
def test_grid_cards_average_to_the_papers_mean_row(key):
    metric, ds = key
    cells = {c.id: c.reported[metric] for c in CARDS if c.dataset == ds and "#" in c.path}
    methods = ["standard", "cutout", "mixup", "cutmix", "autoaugment", "adversarial"]
    for j, m in enumerate(methods):
        column = [v for k, v in cells.items() if k.endswith(f"_{m}_{ds}")]
        assert len(column) == 4
        assert sum(column) / 4 == pytest.approx(PAPER_MEANS[key][j], abs=0.051), m
    # and a grid card through get_card by the path a result records
    card = next(c for c in CARDS if "#" in c.path)
    assert zoo.get_card(card.path) is card


def test_the_authors_imagenet_checkpoint_format_loads_safely(tmp_path, monkeypatch):
    """The AugMix release's checkpoint.pth.tar (imagenet.py: epoch, model name, the DataParallel state dict,
    best accuracy, optimiser state) loads with weights_only=True into the card's network; without it, the
    error says where to fetch it by hand."""
    from torchvision.models import resnet50

    card = zoo.get_card("resnet50_augmix_authors")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(zoo.WeightsMissing, match=r"by hand from https://drive\.google\.com/.*--weights PATH"):
        zoo.resolve_weights(card)
    net = resnet50()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    ckpt = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 179, "model": "resnet50", "best_acc1": 0.7753, "optimizer": opt.state_dict(),
                "state_dict": torch.nn.DataParallel(net).state_dict()}, ckpt)
    model, pre, info = zoo.load_model(card, weights=ckpt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values(), strict=True))
    assert info["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert card.reported["mce"] == 65.3 and card.reported["clean_error"] == 22.47


TABLE2 = [c for c in CARDS if "paper_ce" in c.reported]


@pytest.mark.parametrize("card", TABLE2, ids=lambda c: c.id)
def test_table2_rows_average_to_their_mce(card):
    """A card's Table 2 row (15 CEs) averages to the row's mCE to the table's rounding (the paper rounds each
    CE to a whole number: at most 0.5 off each, 0.3 in the reference's check)."""
    from robustbench_augmix.corruptions import load_suite

    rep = card.reported
    ce = rep["paper_ce"]
    assert sorted(ce) == sorted(load_suite("imagenet-c").names())
    mce = rep.get("paper_mce", rep.get("mce"))
    assert sum(ce.values()) / 15 == pytest.approx(mce, abs=0.31)


def test_the_antialiased_resnet50_has_the_releases_layout_and_blur():
    """The module names of adobe/antialiased-cnns' resnet.py (so its state dicts load strictly), and the blur
    against a hand computation: [1, 2, 1] outer itself over 16, reflect padding, stride 2."""
    import numpy as np

    from robustbench_augmix.models.antialiased import BlurPool

    m = build("antialiased:resnet50", num_classes=1000, filter_size=3)
    keys = set(m.state_dict())
    for k in ("maxpool.1.filt", "layer1.0.downsample.0.weight", "layer2.0.conv3.0.filt", "layer2.0.conv3.1.weight",
              "layer2.0.downsample.0.filt", "layer2.0.downsample.1.weight", "layer2.0.downsample.2.running_mean",
              "layer4.0.conv3.0.filt", "fc.weight"):
        assert k in keys, k
    assert m.layer2[0].conv2.stride == (1, 1) and m.state_dict()["layer3.0.conv3.0.filt"].shape == (256, 1, 3, 3)
    with torch.no_grad():
        assert m.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    x = np.arange(2 * 5 * 6, dtype=np.float64).reshape(1, 2, 5, 6) ** 1.5
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16
    want = np.zeros((1, 2, 3, 3))
    for c in range(2):
        for i in range(3):
            for j in range(3):
                want[0, c, i, j] = (xp[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * k).sum()
    got = BlurPool(2, 3, 2).double()(torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_a_checkpoint_in_the_antialiased_release_format_loads_safely(tmp_path):
    """The release's files are a dict with the state dict under 'state_dict' (resnet.py loads
    ``load_url(...)['state_dict']``): read with weights_only=True into the card's network."""
    card = zoo.get_card("resnet50_maxblur")
    net = build(card.builder, num_classes=1000, **dict(card.builder_args))
    ckpt = tmp_path / "resnet50_lpf3.pth"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    model, pre, info = zoo.load_model(card, weights=ckpt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values(), strict=True))
    assert pre.mean == (0.485, 0.456, 0.406) and card.weights["sha256_prefix"] in card.weights["url"]


BY_HAND = [c for c in CARDS if c.weights.get("manual_url")]


@pytest.mark.parametrize("card", BY_HAND, ids=lambda c: c.id)
def test_cards_fetched_by_hand_say_where_and_load_their_release_format(card, tmp_path, monkeypatch):
    """Weights published without a checksum (Google Drive, the Stylized-ImageNet ResNet-50s): never downloaded;
    the error names the address and --weights, and a checkpoint in the releases' format (the DataParallel
    state dict under 'state_dict') loads with weights_only=True."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(zoo.WeightsMissing, match="--weights PATH") as e:
        zoo.resolve_weights(card)
    assert card.weights["manual_url"] in str(e.value) and not card.has_weights
    net = build(card.builder, num_classes=card.num_classes, **dict(card.builder_args))
    ckpt = tmp_path / card.weights["file"]
    torch.save({"epoch": 60, "arch": "resnet50", "state_dict": torch.nn.DataParallel(net).state_dict()}, ckpt)
    model, _, info = zoo.load_model(card, weights=ckpt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values(), strict=True))
    assert info["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
