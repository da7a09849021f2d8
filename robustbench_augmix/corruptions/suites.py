"""Suite tables: the parameter tables of the -C benchmarks, loaded from ``corruptions/*.toml``.

Each suite file names its native image size, the generator script it follows and, per corruption,
the parameter tuple of every severity with the source line it comes from. The files ship inside
the wheel as ``robustbench_augmix._tables``; a source checkout reads them from ``corruptions/``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._common import InputError, package_tables, tomllib

FAMILIES = ("noise", "blur", "weather", "digital")
SEVERITIES = (1, 2, 3, 4, 5)


class Params(Mapping):
    """The parameters of one (suite, corruption, severity) cell: named values and constants,
    readable as ``p.sigma`` or ``p["sigma"]``, plus the suite's id and native ``image_size``."""

    __slots__ = ("_values", "image_size", "suite")

    def __init__(self, values: Mapping[str, float], image_size: int, suite: str) -> None:
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "image_size", image_size)
        object.__setattr__(self, "suite", suite)

    def __setattr__(self, key, value):
        raise AttributeError("Params is read-only")

    def __getitem__(self, key: str) -> float:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> float:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no parameter {key!r}; have {list(self._values)}") from None

    def __repr__(self) -> str:
        return f"Params({dict(self._values)}, suite={self.suite!r})"


@dataclass(frozen=True)
class CorruptionSpec:
    name: str
    family: str
    extra: bool
    param_names: tuple[str, ...]
    severities: tuple[tuple[float, ...], ...]
    source: str
    constants: Mapping[str, float] = field(default_factory=dict)
    alexnet_error: tuple[float, ...] | None = None

    def params(self, severity: int, suite: Suite) -> Params:
        values = dict(zip(self.param_names, self.severities[severity - 1], strict=True))
        values.update(self.constants)
        return Params(values, suite.image_size, suite.id)


@dataclass(frozen=True)
class Suite:
    """One suite table. ``dataset``, ``num_classes``, ``classes`` (the class order a model's outputs follow)
    and ``classes_source`` come from the table's ``[dataset]``: the only place the code learns them."""

    id: str
    name: str
    image_size: int
    layout: str
    generator: str
    corruptions: Mapping[str, CorruptionSpec]
    meta: Mapping[str, Any]
    baseline: Mapping[str, Any] | None
    table_hash: str
    dataset: str
    num_classes: int
    classes: str
    classes_source: str

    def names(self, extra: bool = False) -> list[str]:
        return [n for n, c in self.corruptions.items() if extra or not c.extra]

    @property
    def jpeg_quality(self) -> int | None:
        return self.meta.get("jpeg_quality")


def _table_files() -> dict[str, Any]:
    """Map suite id -> a readable file (a Path in a checkout, a Traversable in a wheel)."""
    return package_tables("corruptions", "robustbench_augmix._tables")


def _parse_corruption(name: str, raw: Mapping[str, Any], where: str) -> CorruptionSpec:
    required = ("family", "params", "severity", "source")
    missing = [k for k in required if k not in raw]
    if missing:
        raise InputError(f"{where}: corruption '{name}' lacks {missing}")
    if raw["family"] not in FAMILIES:
        raise InputError(f"{where}: corruption '{name}' has family {raw['family']!r}, not one of {FAMILIES}")
    sev = tuple(tuple(float(v) for v in row) for row in raw["severity"])
    if len(sev) != 5 or any(len(row) != len(raw["params"]) for row in sev):
        raise InputError(f"{where}: corruption '{name}' needs 5 severities of {len(raw['params'])} values")
    alex = raw.get("alexnet_error")
    return CorruptionSpec(
        name=name,
        family=raw["family"],
        extra=bool(raw.get("extra", False)),
        param_names=tuple(raw["params"]),
        severities=sev,
        source=raw["source"],
        constants=MappingProxyType(dict(raw.get("constants", {}))),
        alexnet_error=tuple(float(v) for v in alex) if alex is not None else None,
    )


@functools.cache
def all_raw_tables() -> dict[str, dict[str, Any]]:
    """Every table of ``corruptions/``, parsed: the -C suites and the -P ones (``[suite] benchmark = "P"``,
    loaded by :mod:`robustbench_augmix.perturbations`)."""
    return {sid: tomllib.loads(f.read_text(encoding="utf-8")) for sid, f in _table_files().items()}


@functools.cache
def _raw_tables() -> dict[str, dict[str, Any]]:
    return {sid: raw for sid, raw in all_raw_tables().items() if raw["suite"].get("benchmark", "C") == "C"}


def dataset_facts(raw: Mapping[str, Any], where: str) -> tuple[str, int, str, str]:
    """``(name, num_classes, classes, classes_source)`` of a table's ``[dataset]``, checked against its
    ``[suite] dataset``."""
    ds, head = raw.get("dataset"), raw["suite"]
    missing = [k for k in ("name", "num_classes", "classes", "classes_source") if k not in (ds or {})]
    if missing:
        raise InputError(f"{where}: [dataset] lacks {missing}")
    if head.get("dataset", ds["name"]) != ds["name"]:
        raise InputError(f"{where}: [suite] dataset {head['dataset']!r} differs from [dataset] name {ds['name']!r}")
    return str(ds["name"]), int(ds["num_classes"]), str(ds["classes"]), str(ds["classes_source"])


def table_parts(raw_all: Mapping[str, Any], suite_id: str, what: str = "suite") -> tuple[dict, dict, dict]:
    """``(table, its [suite], the table holding its entries)`` (a ``based_on`` table's for a suite that
    reuses another's, as CIFAR-100's do); an unknown id lists the known ones."""
    if suite_id not in raw_all:
        raise InputError(f"unknown {what} {suite_id!r}; accepted: {', '.join(sorted(raw_all))}")
    raw = raw_all[suite_id]
    head = raw["suite"]
    return raw, head, raw_all[head["based_on"]] if "based_on" in head else raw


@functools.cache
def load_suite(suite_id: str) -> Suite:
    raw, head, body = table_parts(_raw_tables(), suite_id)
    corr = {
        name: _parse_corruption(name, spec, f"corruptions/{suite_id}.toml")
        for name, spec in body.get("corruptions", {}).items()
    }
    canonical = json.dumps({"suite": head, "corruptions": body.get("corruptions", {})}, sort_keys=True)
    dataset, num_classes, classes, classes_source = dataset_facts(raw, f"corruptions/{suite_id}.toml")
    return Suite(
        id=head["id"],
        name=head["name"],
        image_size=int(head["image_size"]),
        layout=head["layout"],
        generator=head["generator"],
        corruptions=MappingProxyType(corr),
        meta=MappingProxyType(dict(head)),
        baseline=MappingProxyType(dict(raw["baseline"])) if "baseline" in raw else None,
        table_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16],
        dataset=dataset,
        num_classes=num_classes,
        classes=classes,
        classes_source=classes_source,
    )


def suites() -> list[str]:
    """The ids of all suites.

    Examples:
        >>> suites()
        ['cifar10-c', 'cifar100-c', 'imagenet-c', 'tinyimagenet-c']
        >>> s = load_suite("tinyimagenet-c")
        >>> s.dataset, s.num_classes, s.image_size
        ('tinyimagenet', 200, 64)
    """
    return sorted(_raw_tables())


def corruption_names(suite: str = "imagenet-c", extra: bool = False) -> list[str]:
    """The corruptions of a suite in the benchmark's order; ``extra=True`` appends the 4 extra ones.

    Examples:
        >>> corruption_names("cifar10-c")[:3], len(corruption_names())
        (['gaussian_noise', 'shot_noise', 'impulse_noise'], 15)
        >>> corruption_names(extra=True)[-4:]
        ['speckle_noise', 'gaussian_blur', 'spatter', 'saturate']
    """
    return load_suite(suite).names(extra=extra)
