"""Model cards (``zoo/*.toml``) and resolving a card to a model with its weights and preprocessing.

Weights are looked for, in order: an explicit path (``--weights``); the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``, default ``~/.cache/torch``) and, for cards with a Hugging Face
id, the HF hub cache (``$HF_HOME``; ``HF_HUB_OFFLINE=1`` is honoured); then a download into the torch
hub cache, checked against the card's sha256 (or the sha256 prefix torchvision and timm put in file
names). Never a folder relative to the working directory.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._common import InputError, RBAError, atomic_write, package_tables, plain_name, sha256_file, tomllib

REQUIRED = ("id", "name", "dataset", "num_classes", "builder", "params", "weights", "preprocess", "recipe",
            "reported")
DATASETS = ("imagenet", "cifar10", "cifar100", "tinyimagenet", "digits")


class WeightsMissing(RBAError, FileNotFoundError):
    """A card's weights are neither given, cached, nor downloadable here."""


@dataclass(frozen=True)
class Card:
    id: str
    name: str
    dataset: str
    num_classes: int
    builder: str
    params: int
    weights: Mapping[str, Any]
    preprocess: Mapping[str, Any]
    recipe: Mapping[str, Any]
    reported: Mapping[str, Any]
    note: str = ""
    builder_args: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""
    classes: str | tuple[str, ...] | None = None

    def class_names(self) -> list[str] | None:
        """The class name of each output index, if the card declares them: ``classes = "imagenet-1k"``
        (the 1000 ILSVRC-2012 WNIDs in sorted order, the output order of torchvision's and timm's
        ImageNet models; the list is timm's ``ImageNetInfo``), or a list of names."""
        if self.classes is None:
            return None
        if self.classes == "imagenet-1k":
            from timm.data import ImageNetInfo

            return list(ImageNetInfo().label_names())
        return list(self.classes)

    @property
    def has_weights(self) -> bool:
        return bool(self.weights.get("url") or self.weights.get("hf_hub_id") or self.weights.get("path"))

    @property
    def train_command(self) -> str | None:
        """How to produce the weights of a card that names an ``rb-train`` recipe (``[weights] train_recipe``)."""
        r = self.weights.get("train_recipe")
        return (f"rb-train --recipe {r} --data PATH --out runs/{self.id}, then rb-eval --model "
                f"runs/{self.id}/card.toml") if r else None

    @property
    def local_weights(self) -> Path | None:
        """``[weights] path`` (relative to the card's folder), as ``rb-train`` writes it."""
        if not self.weights.get("path"):
            return None
        p = Path(self.weights["path"]).expanduser()
        return p if p.is_absolute() else Path(self.path).parent / p


def _card_files() -> dict[str, Any]:
    return package_tables("zoo", "robustbench_augmix._zoo")


def parse_card(raw: Mapping[str, Any], where: str) -> Card:
    """Check a card's fields and freeze it; errors name the file and the field."""
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise InputError(f"{where}: model card lacks {missing}")
    if raw["dataset"] not in DATASETS:
        raise InputError(f"{where}: dataset {raw['dataset']!r} is not one of {DATASETS}")
    if ":" not in raw["builder"]:
        raise InputError(f"{where}: builder {raw['builder']!r} must look like timm:NAME, torchvision:NAME, cifar:NAME")
    pre = raw["preprocess"]
    for k in ("input_size", "mean", "std"):
        if k not in pre:
            raise InputError(f"{where}: [preprocess] lacks {k}")
    if len(pre["mean"]) != 3 or len(pre["std"]) != 3:
        raise InputError(f"{where}: [preprocess] mean and std need 3 values")
    rep = raw["reported"]
    if any(k in rep for k in ("clean_error", "mce", "mean_corruption_error")) and not rep.get("citation"):
        raise InputError(f"{where}: [reported] numbers need a citation")
    w = raw["weights"]
    if (w.get("url") or w.get("hf_hub_id")) and not (w.get("sha256") or w.get("sha256_prefix") or w.get("hf_hub_id")):
        raise InputError(f"{where}: [weights] with a url need sha256 or sha256_prefix")
    if w.get("file") is not None:
        plain_name(w["file"], f"{where}: [weights] file")
    if "licence" not in w:
        raise InputError(f"{where}: [weights] lacks licence")
    classes = raw.get("classes")
    if classes is not None and classes != "imagenet-1k":
        n = int(raw["num_classes"])
        if not isinstance(classes, list) or len(classes) != n or len(set(classes)) != n:
            raise InputError(f'{where}: classes must be "imagenet-1k" or a list of num_classes distinct names')
        classes = tuple(str(c) for c in classes)
    plain_name(raw["id"], f"{where}: card id")
    freeze = lambda d: MappingProxyType(dict(d))  # noqa: E731
    return Card(id=raw["id"], name=raw["name"], dataset=raw["dataset"], num_classes=int(raw["num_classes"]),
                builder=raw["builder"], params=int(raw["params"]), weights=freeze(w), preprocess=freeze(pre),
                recipe=freeze(raw["recipe"]), reported=freeze(rep), note=raw.get("note", ""),
                builder_args=freeze(raw.get("builder_args", {})), path=where, classes=classes)


GRID_SUFFIX = ".grid"  # zoo/<name>.grid.toml: a table of a paper's grid, one card per cell


def grid_cards(raw: Mapping[str, Any], where: str) -> list[Card]:
    """The cards of a grid table (``zoo/*.grid.toml``): one per (network, method, dataset) with a reported
    number, its recipe the cell of ``recipes.toml``'s grid of the same name. ``metrics`` name the tables
    ``[<metric>.<dataset>]`` (rows networks, columns ``methods``; a ``mean`` row is the paper's, for the
    tests); ``[paper_ce.<dataset>.<network>]`` holds a method's CE per corruption in the suite's order.
    A card's ``path`` is ``<file>#<id>``, which :func:`get_card` reads back."""
    from .baselines.methods import get_method
    from .recipes import load_recipe

    out = []
    for ds, dsf in raw["datasets"].items():
        for arch, af in raw["archs"].items():
            for j, method in enumerate(raw["methods"]):
                m = get_method(method)
                label = raw.get("labels", {}).get(method, m.label)
                fmt = {"arch": arch, "method": method.replace("-", "_"), "dataset": ds, "suite": dsf["suite"],
                       "label": label}
                cid, rid = raw["id"].format(**fmt), raw["recipe"].format(**{**fmt, "method": method})
                r = load_recipe(rid)
                rep: dict[str, Any] = {k: raw[k][ds][arch][j] for k in raw["metrics"] if arch in raw[k].get(ds, {})}
                ce = raw.get("paper_ce", {}).get(ds, {}).get(arch, {}).get(method)
                if ce is not None:
                    from .corruptions import load_suite

                    rep["paper_ce"] = dict(zip(load_suite(r.eval_suite).names(), ce, strict=True))
                cited = [t for t in ("clean_citation",) if "clean_error" in rep and raw.get(t)]
                rep["citation"] = raw["citation"].format(**fmt) + "".join(raw[t] for t in cited)
                note = (f"The paper's '{label}' baseline ({m.summary}): the same network and schedule as the "
                        "AugMix recipe. No weights were released; rb-train produces them (the recipe below), and "
                        "the card it writes carries these reported numbers so the leaderboard shows the run "
                        f"against the paper. Method: {m.source}." + (f" {af['note']}" if af.get("note") else ""))
                card = {
                    "id": cid, "name": f"{af['name']}, {label} ({ds.upper()})", "dataset": ds,
                    "num_classes": dsf["num_classes"], "builder": af["builder"], "params": af["params"][ds],
                    "note": note,
                    "weights": {"licence": raw["licence"], "origin": "none released; rb-train produces them",
                                "train_recipe": rid},
                    "preprocess": {"input_size": r.input_size, "interpolation": "bilinear", "mean": list(r.mean),
                                   "std": list(r.std), **raw.get("preprocess", {})},
                    "recipe": {"text": f"{label} {raw['recipe_name']} recipe: {r.text}", "link": raw["link"],
                               "id": rid},
                    "reported": rep,
                    **({"classes": raw["classes"]} if "classes" in raw else {}),
                }
                out.append(parse_card(card, f"{where}#{cid}"))
    return out


@functools.cache
def _cards() -> dict[str, Card]:
    out = {}
    for cid, f in sorted(_card_files().items()):
        raw = tomllib.loads(f.read_text(encoding="utf-8"))
        if cid.endswith(GRID_SUFFIX):
            found = grid_cards(raw, str(f))
        else:
            found = [parse_card(raw, str(f))]
            if found[0].id != cid:
                raise InputError(f"{f}: id {found[0].id!r} differs from the file name")
        for card in found:
            if card.id in out:
                raise InputError(f"{f}: card {card.id} is defined twice (also in {out[card.id].path})")
            out[card.id] = card
    return dict(sorted(out.items()))


def cards(pattern: str = "*", dataset: str | None = None) -> list[Card]:
    """Cards whose id matches a shell-style ``pattern`` (``'resnet*'``), optionally of one dataset."""
    return [c for cid, c in _cards().items() if fnmatch.fnmatch(cid, pattern) and (dataset in (None, c.dataset))]


def get_card(name: str) -> Card:
    """A card by id, or from a ``card.toml`` path (e.g. one ``rb-train`` wrote)."""
    if "#" in name and name.rsplit("#", 1)[0].endswith(GRID_SUFFIX + ".toml"):
        name = name.rsplit("#", 1)[1]  # a grid card's path: its zoo id follows the '#'
    elif name.endswith(".toml") and Path(name).expanduser().is_file():
        path = Path(name).expanduser().resolve()  # results record it; the leaderboard reads it from anywhere
        return parse_card(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
    if name not in _cards():
        import difflib

        near = difflib.get_close_matches(name, list(_cards()), n=3)
        raise InputError(f"no model card {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                         + " (rb-zoo list shows them)")
    return _cards()[name]


# ------------------------------------------------------------------------------------- weights
def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``; worked out as torch does (``$TORCH_HOME``, else
    ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``) while torch is not imported, so listings stay fast."""
    if "torch" in sys.modules:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints"
    return _hub_dir_from_environment() / "checkpoints"


def _hub_dir_from_environment() -> Path:
    """torch.hub's default folder (torch/hub.py ``_get_torch_home``), without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub"


def _verify(card: Card, path: Path) -> Path:
    digest = None
    if card.weights.get("sha256"):
        digest = sha256_file(path)
        ok = digest == card.weights["sha256"]
    elif card.weights.get("sha256_prefix"):
        digest = sha256_file(path)
        ok = digest.startswith(card.weights["sha256_prefix"])
    else:
        ok = True
    if not ok:
        raise WeightsMissing(f"{path} does not match card {card.id} (sha256 {digest}, expected "
                             f"{card.weights.get('sha256') or card.weights['sha256_prefix'] + '...'}); delete it "
                             "and download again, or pass the right file with --weights")
    return path


def resolve_weights(card: Card, weights: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The local file holding ``card``'s weights, following the order in the module docstring."""
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise WeightsMissing(f"--weights {p} does not exist")
        return p
    w = card.weights
    if card.local_weights is not None:
        if not card.local_weights.is_file():
            raise WeightsMissing(f"card {card.id} names {card.local_weights}, which does not exist; "
                                 "pass --weights PATH")
        return _verify(card, card.local_weights)
    if not card.has_weights:
        ways = []
        if w.get("manual_url"):
            ways.append(f"download {w.get('file', 'the file')} by hand from {w['manual_url']} (no checksum is "
                        "published, so it is not fetched automatically; the result records its sha256) and pass "
                        "it with --weights PATH")
        if card.train_command:
            ways.append(f"train them: {card.train_command}")
        if not w.get("manual_url"):
            ways.append("pass a state dict with --weights PATH")
        raise WeightsMissing(f"card {card.id} names no downloadable weights ({w.get('origin', 'none')}): "
                             + "; or ".join(ways))
    # The cached file's name comes from the card (untrusted when the card is a user's file): a plain name in
    # the cache, checked before anything is fetched.
    file = w.get("file") or (w["url"].rsplit("/", 1)[1] if w.get("url") else None)
    if file is not None:
        plain_name(file, f"card {card.id}: the weights file name")
    cached = torch_hub_dir() / file if file else None
    if cached is not None and cached.is_file():
        return _verify(card, cached)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    hf = _hf_file(w, local_only=True) if w.get("hf_hub_id") else None
    if hf is not None:
        return hf
    if download and not offline and w.get("url"):
        import torch

        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(w["url"], str(cached), hash_prefix=w.get("sha256_prefix"), progress=True)
            return _verify(card, cached)
        except Exception as e:
            cached.unlink(missing_ok=True)
            reason = f"{type(e).__name__}: {e}"
    elif download and not offline and w.get("hf_hub_id") and (hf := _hf_file(w, local_only=False)) is not None:
        return hf
    else:
        reason = "downloads are off (HF_HUB_OFFLINE or download=False)"
    where = f"{cached}" + (f" or the Hugging Face cache of {w['hf_hub_id']}" if w.get("hf_hub_id") else "")
    raise WeightsMissing(
        f"the weights of {card.id} are not here: expected {where}. Could not download {w.get('url')} ({reason}). "
        f"Fetch it on a machine with access ('rb-zoo download {card.id}') and copy {file} into {cached.parent}, "
        "or pass --weights PATH."
    )


def _hf_file(w: Mapping[str, Any], local_only: bool) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(w["hf_hub_id"], w.get("hf_hub_filename", "model.safetensors"),
                                    local_files_only=local_only))
    except Exception:  # not cached, offline, or unreachable
        return None


def load_model(name: str | Card, weights: str | os.PathLike | None = None, trust: bool = False,
               download: bool = True):
    """``(model, preprocess, info)`` for a card: the architecture, its weights loaded safely, and the
    preprocessing the card declares (normalisation; resizing only when the input size differs)."""
    from .models import build, load_weights
    from .preprocess import resolve_preprocess

    card = name if isinstance(name, Card) else get_card(name)
    model = build(card.builder, num_classes=card.num_classes, **dict(card.builder_args))
    path = resolve_weights(card, weights, download)
    load_weights(model, path, trust)
    info = {"id": card.id, "card": card.path, "builder": card.builder, "weights": str(path),
            "weights_sha256": sha256_file(path)}
    return model, resolve_preprocess(card), info


def _is_factory(spec) -> bool:
    return isinstance(spec, str) and spec.rpartition(":")[0].endswith(".py")


def resolve_model(model=None, *, suite, weights=None, checkpoint=None, arch: str | None = None,
                  num_classes: int | None = None, trust: bool = False, download: bool = True,
                  mean=None, std=None, input_size: int | None = None, random_weights: bool = False):
    """``(module, Preprocess, provenance)`` for every way of naming a model; ``rb-eval``, ``rb-train --eval``,
    ``rb-bench eval`` and :func:`~robustbench_augmix.evaluate` callers all come through here.

    Args:
        model: a zoo card id, a :class:`Card`, a ``card.toml`` path, ``path/to/file.py:factory`` (a callable
            returning an ``nn.Module``), or an ``nn.Module``; None with ``arch``.
        suite: the suite id or :class:`~robustbench_augmix.corruptions.Suite` it will be evaluated on: a card
            must be of its dataset, and ``arch`` gets its class count (``Suite.num_classes``) by default.
        weights, checkpoint: the weights file (a card's ``--weights``; a factory's or ``arch``'s checkpoint).
        arch: ``timm:NAME`` / ``torchvision:NAME`` / ``cifar:NAME``, built and loaded from ``checkpoint``.
        trust: allow a full-pickle checkpoint (it can run code).
        mean, std, input_size: override the derived preprocessing (resize + centre crop to ``input_size``).
        random_weights: build ``arch`` without a checkpoint (``rb-bench eval`` times a model's speed only).

    Returns:
        The module, its :class:`~robustbench_augmix.preprocess.Preprocess` and a provenance dict (id, card or
        factory or builder, the sha256 of every file read) that the results record.
    """
    import dataclasses

    import torch

    from .corruptions import load_suite
    from .models import ModelError, build, load_factory, load_weights
    from .preprocess import resolve_preprocess

    suite = load_suite(suite) if isinstance(suite, str) else suite
    if model is not None and arch:
        raise ModelError("pass either --model or --arch with --checkpoint, not both")
    ckpt = weights or checkpoint
    if isinstance(model, Card) or (isinstance(model, str) and not _is_factory(model)):
        card = model if isinstance(model, Card) else get_card(model)
        if card.dataset != suite.dataset:
            raise ModelError(f"card {card.id} is a {card.dataset} model; {suite.id} needs one trained on "
                             f"{suite.dataset}")
        try:
            module, pre, info = load_model(card, ckpt, trust, download)
        except WeightsMissing as e:
            raise ModelError(str(e)) from None
    elif isinstance(model, torch.nn.Module) or _is_factory(model):
        if isinstance(model, torch.nn.Module):
            module, info = model, {"id": type(model).__name__}
        else:
            module = load_factory(model)
            file = Path(model.rpartition(":")[0]).expanduser()
            info = {"id": f"{file.stem}.{model.rpartition(':')[2]}", "factory": model,
                    "factory_sha256": sha256_file(file)}
        pre = resolve_preprocess(module)
        if checkpoint:
            load_weights(module, checkpoint, trust)
            info.update(_checkpoint_provenance(checkpoint))
    elif arch:
        if not checkpoint and not random_weights:
            raise ModelError(f"--arch {arch} needs --checkpoint with its weights")
        module = build(arch, num_classes=num_classes or suite.num_classes)
        if checkpoint:
            load_weights(module, checkpoint, trust)
            info = {"id": Path(checkpoint).stem, "builder": arch, **_checkpoint_provenance(checkpoint)}
        else:
            info = {"id": arch.partition(":")[2], "builder": arch, "weights": "random"}
        pre = resolve_preprocess(arch, model=module, image_size=suite.image_size)
    else:
        raise ModelError("name a model: --model (a zoo card, card.toml or path/to/file.py:factory), or "
                         "--checkpoint PATH --arch timm:NAME")
    pre = dataclasses.replace(pre, **{k: tuple(v) for k, v in (("mean", mean), ("std", std)) if v is not None})
    if input_size:
        pre = dataclasses.replace(pre, resize=input_size, crop=input_size)
    return module, pre, info


def _checkpoint_provenance(path) -> dict:
    p = Path(path).expanduser()
    return {"checkpoint": str(p.resolve()), "checkpoint_sha256": sha256_file(p)}


def model_classes(info) -> list[str] | None:
    """The class names of a resolved model's outputs, where its card declares them (else None)."""
    return get_card(info["card"]).class_names() if info.get("card") else None


# ------------------------------------------------------------------------------------- writing cards
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # an inline table (a recipe's method constants)
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))  # a TOML basic string is a JSON string


def write_card(path: Path, tables: Mapping[str, Any]) -> None:
    """Write a model card (flat keys first, then one level of tables) as TOML."""
    out = io.StringIO()
    for k, v in tables.items():
        if not isinstance(v, Mapping):
            out.write(f"{k} = {_toml_value(v)}\n")
    for k, v in tables.items():
        if isinstance(v, Mapping):
            out.write(f"\n[{k}]\n")
            for kk, vv in v.items():
                out.write(f"{kk} = {_toml_value(vv)}\n")
    atomic_write(path, lambda p: p.write_text(out.getvalue(), encoding="utf-8"))
