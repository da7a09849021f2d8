"""Training recipes as data (``recipes.toml``): the paper's CIFAR and ImageNet schedules and the demo's,
loaded into frozen :class:`Recipe` dataclasses with overrides checked, and the learning-rate schedules."""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._common import RBAError, tomllib


class TrainError(RBAError, ValueError):
    """A user-facing training problem (bad recipe, override, data or resume state)."""


# ------------------------------------------------------------------------------------------ recipes
@dataclass(frozen=True)
class Recipe:
    id: str
    dataset: str
    arch: str
    epochs: int
    batch_size: int
    lr: float
    lr_min: float
    schedule: str
    lr_batch_scaling: bool
    momentum: float
    nesterov: bool
    weight_decay: float
    augmix: bool
    jsd: bool
    jsd_lambda: float
    severity: float
    width: int
    depth: int
    alpha: float
    all_ops: bool
    transform: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eval_suite: str
    source: str
    card: str = ""  # the zoo card whose reported numbers this recipe, run unchanged, reproduces
    method: str = "augmix"  # a row of baselines.methods; augmix and jsd above follow from it
    method_args: Mapping = field(default_factory=dict)  # the method's constants for this dataset

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
                for k, v in dataclasses.asdict(self).items()}

    @property
    def text(self) -> str:
        from .baselines.methods import get_method

        m = get_method(self.method)
        args = ", ".join(f"{k} {_arg_text(k, v)}" for k, v in self.method_args.items())
        aug = ("AugMix" + (f" + JSD (lambda {self.jsd_lambda:g})" if self.jsd else "") +
               f", severity {self.severity:g}, width {self.width}" if self.augmix else
               "standard (no AugMix)" if m.name == "standard" else
               m.label + (f" (JSD lambda {self.jsd_lambda:g})" if self.jsd else "") + (f" ({args})" if args else ""))
        return (f"{self.epochs} epochs, SGD{' nesterov' if self.nesterov else ''} lr {self.lr:g} "
                f"({'per-step cosine' if self.schedule == 'cosine' else 'x0.1 at 1/3 and 2/3'}), batch "
                f"{self.batch_size}, wd {self.weight_decay:g}; {aug}; {self.transform}")


def _arg_text(key: str, v) -> str:
    if key in ("epsilon", "step_size") and isinstance(v, float) and abs(v * 255 - round(v * 255)) < 1e-9:
        return f"{round(v * 255)}/255"  # PGD budgets are quoted in 0..255 units
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _recipe_table() -> dict:
    """``recipes.toml`` with its grids expanded: ``{"base": ..., "recipe": {name: fields}}``."""
    text = importlib.resources.files("robustbench_augmix").joinpath("recipes.toml").read_text(encoding="utf-8")
    table = tomllib.loads(text)
    out = dict(table.get("recipe", {}))
    for gname, g in table.get("grid", {}).items():
        for ds, ds_fields in g["datasets"].items():
            for arch, arch_fields in g["archs"].items():
                for method in g["methods"]:
                    name = g["name"].format(dataset=ds, arch=arch, method=method)
                    if name in out:
                        raise TrainError(f"recipes.toml: grid {gname} repeats recipe {name}")
                    cell = {"base": g["base"], "dataset": ds, **ds_fields, **arch_fields, "method": method}
                    if method in g.get("carded", ()):
                        cell["card"] = g["card"].format(dataset=ds, arch=arch, method=method.replace("-", "_"))
                    out[name] = cell
    return {"base": table["base"], "recipe": out}


def recipes() -> list[str]:
    """The recipe names ``rb-train --recipe`` accepts (the grids of ``recipes.toml`` expanded)."""
    return sorted(_recipe_table()["recipe"])


def load_recipe(name: str, **overrides) -> Recipe:
    """A recipe by name with fields overridden (``load_recipe('cifar10-wrn40_2-augmix', epochs=10)``)."""
    table = _recipe_table()
    if name not in table["recipe"]:
        import difflib

        near = difflib.get_close_matches(name, list(table["recipe"]), n=3)
        raise TrainError(f"no recipe {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "") +
                         f" (available: {', '.join(sorted(table['recipe']))})")
    raw = dict(table["base"][table["recipe"][name]["base"]])
    raw.update({k: v for k, v in table["recipe"][name].items() if k != "base"})
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TrainError(f"unknown recipe fields {unknown}; accepted: {', '.join(sorted(fields))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    method = _method(raw, overrides)
    raw.update({k: v for k, v in overrides.items() if k not in ("augmix", "jsd", "method")})
    raw["method"], raw["augmix"], raw["jsd"] = method.name, method.augmix, method.jsd
    raw["method_args"] = {**method.resolved_args(raw["dataset"]), **overrides.get("method_args", {})}
    unknown_args = sorted(set(raw["method_args"]) - set(method.args))
    if unknown_args:
        raise TrainError(f"method {method.name} has no constants {unknown_args}; it takes "
                         f"{', '.join(method.args) or 'none'}")
    raw["id"] = name
    raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
    bad = [f"{k} = {raw[k]!r}" for k, f in fields.items() if k in raw and f.type in ("float", "int")
           and not (isinstance(raw[k], (int, float)) and math.isfinite(raw[k]))]
    bad += [f"{k} = {raw[k]!r}" for k in ("lr", "epochs", "batch_size") if k in raw and not bad and raw[k] <= 0]
    if bad:
        raise TrainError(f"recipe {name}: {', '.join(bad)} is not a usable value (finite, and positive for lr, "
                         "epochs and batch size)")
    if raw["schedule"] not in ("cosine", "step"):
        raise TrainError(f"schedule must be cosine or step, got {raw['schedule']!r}")
    return Recipe(**{k: raw[k] for k in fields if k in raw})


def _method(raw: dict, overrides: dict):
    """The recipe's method after the overrides: ``method=`` names one; the older switches ``jsd=False`` and
    ``augmix=False`` (rb-train --no-jsd / --no-augmix) map AugMix onto its ablation and onto standard."""
    from .baselines.methods import get_method

    try:
        m = get_method(overrides.get("method", raw.get("method", "augmix")))
    except RBAError as e:
        raise TrainError(str(e)) from None
    if overrides.get("augmix") is False:
        if overrides.get("jsd") is not False and m.name == "augmix":
            raise TrainError("the JSD loss needs AugMix views: pass --no-jsd with --no-augmix (or --method standard)")
        if m.augmix:
            m = get_method("standard")
    elif overrides.get("jsd") is False and m.jsd:
        if m.name != "augmix":
            raise TrainError(f"--no-jsd turns AugMix into its ablation augmix-nojsd; method {m.name} has no "
                             "variant without the JSD loss (choose another --method)")
        m = get_method("augmix-nojsd")
    return m


def learning_rate(r: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimiser step ``step`` (0-based) of the recipe's schedule.

    cosine: ``lr_min + (lr - lr_min) (1 + cos(pi step / total)) / 2`` per step (cifar.py ``get_lr``);
    step: ``lr x 0.1^k`` with k the number of thirds of the epochs passed (imagenet.py ``adjust_learning_rate``),
    times ``batch / 256`` when ``lr_batch_scaling``.
    """
    if r.schedule == "cosine":
        total = r.epochs * steps_per_epoch
        return r.lr_min + (r.lr - r.lr_min) * 0.5 * (1 + math.cos(step / total * math.pi))
    k = max(r.epochs // 3, 1)
    epoch = step // steps_per_epoch
    lr = r.lr * (1.0 if epoch < k else 0.1 if epoch < 2 * k else 0.01)
    return lr * (r.batch_size / 256 if r.lr_batch_scaling else 1.0)
