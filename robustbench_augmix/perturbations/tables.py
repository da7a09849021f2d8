"""The -P suite tables (``corruptions/*-p.toml``, ``[suite] benchmark = "P"``): per perturbation its split
(test or validation), frame count, whether its frames are compared with frame 0 (the noise sequences), the
-C kernel each frame is, its parameters per difficulty and the values that change linearly with the frame.
No torch here: listings read them at once.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._common import InputError
from ..corruptions.suites import FAMILIES, Params, all_raw_tables, dataset_facts, table_parts

SPLITS = ("test", "validation")
DIFFICULTIES = (1, 2, 3)  # test.py --difficulty: the noise sequences' level (separate data), the others' frame stride


@dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation of a -P suite. ``difficulty[d - 1]`` is the parameter row of difficulty ``d`` (one row
    for the perturbations whose difficulty strides the frames instead); ``frame[name]`` is the generator's own
    expression of ``name`` at frame ``i`` (e.g. ``"(2 * i + 70) / 100"``), evaluated as Python evaluates it there,
    so the floats are the script's. ``kernel`` is empty while not generated."""

    name: str
    family: str
    split: str
    frames: int
    noise: bool
    source: str
    kernel: str = ""
    param_names: tuple[str, ...] = ()
    difficulty: tuple[tuple[float, ...], ...] = ((),)
    frame: Mapping[str, str] = field(default_factory=dict)
    sequence_draws: bool = False  # one random draw per sequence (snow's layer), not one per frame
    constants: Mapping[str, Any] = field(default_factory=dict)  # values that are not numbers per difficulty
    on_source: bool = False  # warps the resized source image, then the centre crop (ImageNet-P's geometric ones)

    def params(self, difficulty: int, i: int, suite: PSuite) -> Params:
        """The parameters of frame ``i`` at ``difficulty`` (the -C kernel's :class:`Params`)."""
        row = self.difficulty[difficulty - 1] if self.noise else self.difficulty[0]
        values = dict(zip(self.param_names, row, strict=True))
        values.update(self.constants)
        values.update({k: _evaluate(_expression(e), i) for k, e in self.frame.items()})
        return Params(values, suite.image_size, suite.id)


@dataclass(frozen=True)
class PSuite:
    """One -P suite table; ``mean_fp`` lists the perturbations the CIFAR mean flip probability averages."""

    id: str
    name: str
    image_size: int
    layout: str
    generator: str
    perturbations: Mapping[str, PerturbationSpec]
    meta: Mapping[str, Any]
    table_hash: str
    dataset: str
    num_classes: int
    classes: str
    classes_source: str
    mean_fp: tuple[str, ...] = ()

    def names(self, split: str = "test") -> list[str]:
        """The perturbations of ``split`` (``test``, ``validation`` or ``all``), in the table's order."""
        if split not in (*SPLITS, "all"):
            raise InputError(f"split must be test, validation or all, got {split!r}")
        return [n for n, p in self.perturbations.items() if split in ("all", p.split)]

    def generated(self) -> list[str]:
        """The perturbations that have a kernel here."""
        return [n for n, p in self.perturbations.items() if p.kernel]

    def release_stem(self, name: str, difficulty: int = 1) -> str:
        """The released file stem of a sequence set: ``name``, and ``<name>_<d>`` for a noise sequence at
        difficulty d > 1 (the reference's separate data sets; the other perturbations' difficulty is a stride)."""
        return f"{name}_{difficulty}" if self.perturbations[name].noise and difficulty > 1 else name

    def split_stem(self, stem: str) -> tuple[str, int]:
        """:meth:`release_stem` undone: ``"gaussian_noise_2"`` -> ``("gaussian_noise", 2)``."""
        name, _, d = stem.rpartition("_")
        if d in ("2", "3") and name in self.perturbations and self.perturbations[name].noise:
            return name, int(d)
        return stem, 1

    def release_stems(self, names: Sequence[str] | None = None) -> list[str]:
        """Every file of the release for ``names`` (default: every perturbation generated here): each name, the
        noise sequences at every difficulty."""
        names = list(names) if names is not None else self.generated()
        return [self.release_stem(n, d) for n in names
                for d in (DIFFICULTIES if self.perturbations[n].noise else (1,))]


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@functools.cache
def _expression(text: str, where: str = "a frame expression") -> ast.Expression:
    """A frame expression, parsed: numbers, ``i``, + - * / and parentheses, nothing else."""
    try:
        tree = ast.parse(str(text), mode="eval")
    except SyntaxError:
        raise InputError(f"{where}: {text!r} is not an expression of i") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Load, *_OPS)) or (
            isinstance(node, ast.Constant) and isinstance(node.value, (int, float))) or (
            isinstance(node, ast.Name) and node.id == "i")
        if not ok:
            raise InputError(f"{where}: {text!r} may use numbers, i, + - * / and parentheses only")
    return tree


def _evaluate(tree: ast.AST, i: int) -> float:
    if isinstance(tree, ast.Expression):
        return float(_evaluate(tree.body, i))
    if isinstance(tree, ast.Constant):
        return tree.value
    if isinstance(tree, ast.Name):
        return i
    if isinstance(tree, ast.UnaryOp):
        return -_evaluate(tree.operand, i)
    return _OPS[type(tree.op)](_evaluate(tree.left, i), _evaluate(tree.right, i))


def _parse(name: str, raw: Mapping[str, Any], where: str) -> PerturbationSpec:
    missing = [k for k in ("family", "split", "frames", "source") if k not in raw]
    if missing:
        raise InputError(f"{where}: perturbation '{name}' lacks {missing}")
    if raw["family"] not in FAMILIES or raw["split"] not in SPLITS:
        raise InputError(f"{where}: perturbation '{name}' has family {raw['family']!r} / split {raw['split']!r}")
    noise = bool(raw.get("noise", False))
    names = tuple(raw.get("params", ()))
    rows = tuple(tuple(float(v) for v in r) for r in raw.get("difficulty", [[]]))
    if (noise and raw.get("kernel") and len(rows) != 3) or any(len(r) != len(names) for r in rows):
        raise InputError(f"{where}: perturbation '{name}' needs {'3 rows' if noise else 'one row'} of {len(names)} "
                         "values in difficulty")
    frame = {k: str(v) for k, v in raw.get("frame", {}).items()}
    for k, v in frame.items():
        _expression(v, f"{where}: perturbation '{name}' frame {k}")
    if int(raw["frames"]) < 2:
        raise InputError(f"{where}: perturbation '{name}' needs at least 2 frames")
    if raw.get("draws", "frame") not in ("frame", "sequence"):
        raise InputError(f"{where}: perturbation '{name}' draws must be 'frame' or 'sequence'")
    return PerturbationSpec(name=name, family=raw["family"], split=raw["split"], frames=int(raw["frames"]),
                            noise=noise, source=raw["source"], kernel=raw.get("kernel", ""), param_names=names,
                            difficulty=rows, frame=MappingProxyType(frame),
                            sequence_draws=raw.get("draws", "frame") == "sequence",
                            constants=MappingProxyType(dict(raw.get("constants", {}))),
                            on_source=bool(raw.get("on_source", False)))


def _p_tables() -> dict[str, dict[str, Any]]:
    return {sid: raw for sid, raw in all_raw_tables().items() if raw["suite"].get("benchmark") == "P"}


@functools.cache
def load_psuite(suite_id: str) -> PSuite:
    """A -P suite by id (:func:`psuites` lists them)."""
    raw, head, body = table_parts(_p_tables(), suite_id, "-P suite")
    where = f"corruptions/{suite_id}.toml"
    pert = {n: _parse(n, spec, where) for n, spec in body.get("perturbations", {}).items()}
    unknown = [n for n in head.get("mean_fp", ()) if n not in pert]
    if unknown:
        raise InputError(f"{where}: mean_fp names perturbations the table lacks: {unknown}")
    canonical = json.dumps({"suite": head, "perturbations": body.get("perturbations", {})}, sort_keys=True)
    dataset, num_classes, classes, classes_source = dataset_facts(raw, where)
    return PSuite(id=head["id"], name=head["name"], image_size=int(head["image_size"]), layout=head["layout"],
                  generator=head["generator"], perturbations=MappingProxyType(pert), meta=MappingProxyType(dict(head)),
                  table_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], dataset=dataset,
                  num_classes=num_classes, classes=classes, classes_source=classes_source,
                  mean_fp=tuple(head.get("mean_fp", ())))


def psuites() -> list[str]:
    """The ids of the -P suites.

    Examples:
        >>> psuites()
        ['cifar10-p', 'cifar100-p', 'imagenet-p', 'tinyimagenet-p']
        >>> s = load_psuite("cifar10-p")
        >>> s.perturbations["translate"].frames, len(s.names("test")), s.mean_fp[4]
        (16, 10, 'spatter')
    """
    return sorted(_p_tables())


def perturbation_names(suite: str = "imagenet-p", split: str = "test") -> list[str]:
    """The perturbations of a -P suite's ``split`` (``test``: the 10 of mFR; ``validation``; ``all``)."""
    return load_psuite(suite).names(split)
