"""The offline demo: the whole toolkit on data that ships inside a dependency.

1. Train the demo CNN on scikit-learn's handwritten digits (upsampled to 32 px) once per training method:
   by default standard training, Mixup and AugMix + JSD (``digits-smallcnn-<method>``), with ``rb-train``'s
   loop; ``methods`` may name any of the digits recipes (``ALL_METHODS``).
2. Write the digits test split as a CIFAR-10 test batch and generate a corrupted copy of it with the
   CIFAR-10-C tables in the official layout (``rb-corrupt``'s generator).
3. Evaluate every model on it from the files (``rb-eval --source official``) and compare them, also in the
   layout of the AugMix paper's Table 1 (rows networks, columns methods).

Nothing is downloaded; the frost textures come from the installed reference package (the ``frost`` extra).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .data.training import digits

# The default comparison: the baseline, one mixing method (the paper's strongest baseline on CIFAR-10-C,
# Table 1) and AugMix; a few CPU minutes in all.
METHODS = ("standard", "mixup", "augmix")


def all_methods() -> list[str]:
    """Every method with a digits recipe (recipes.toml's digits grid), in the method table's order."""
    from .baselines import METHODS as TABLE
    from .recipes import recipes

    have = {n.removeprefix("digits-smallcnn-") for n in recipes() if n.startswith("digits-smallcnn-")}
    return [m for m in TABLE if m in have]


@dataclass
class DemoConfig:
    out: str = "rb-demo"
    seeds: Sequence[int] = (0,)
    epochs: int | None = None          # default: the recipe's (15)
    train_limit: int | None = None     # smoke tests only
    test_limit: int | None = None
    corruptions: Sequence[str] | None = None
    severities: Sequence[int] = (1, 2, 3, 4, 5)
    threads: int | None = None
    batched: bool | None = None
    progress: bool = True
    methods: Sequence[str] = METHODS


def write_test_split(root: Path, limit: int | None = None) -> Path:
    """The digits test split as ``cifar-10-batches-py/test_batch`` (torchvision's pickle layout)."""
    from .data.sources import write_cifar

    test = digits("test")
    return write_cifar(root, test.images[:limit], test.labels[:limit],
                       batch_label=b"digits test (robustbench-augmix demo)")


def run(cfg: DemoConfig, console=None) -> dict:
    """Train, corrupt, evaluate; returns ``{"results": {variant: [result dicts per seed]}, "report": path}``."""
    import torch

    from .corruptions import load_suite
    from .evaluation import Preprocess, evaluate
    from .generate import Generator, Plan
    from .models import build, load_weights
    from .train import TrainConfig, Trainer, load_recipe

    say = console.print if console is not None else (lambda *a, **k: None)
    valid = all_methods()
    bad = [m for m in cfg.methods if m not in valid]
    if bad or not cfg.methods:
        from ._common import InputError

        raise InputError(f"no digits recipe for method(s) {bad or '(none given)'}; valid: {', '.join(valid)}, or all")
    out = Path(cfg.out).expanduser()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    suite = load_suite("cifar10-c")
    corruptions = list(cfg.corruptions or suite.names())

    say("[bold]1/3[/] corrupting the digits test split with the CIFAR-10-C tables")
    clean_root = write_test_split(out / "data", cfg.test_limit)
    corrupted = out / "DIGITS-C"
    plan = Plan(suite="cifar10-c", data=str(clean_root), out=str(corrupted), corruptions=corruptions,
                severities=tuple(cfg.severities), seed=0)
    Generator(plan).run()

    results: dict[str, list[dict]] = {v: [] for v in cfg.methods}
    for seed in cfg.seeds:
        for variant in cfg.methods:
            recipe = load_recipe(f"digits-smallcnn-{variant}", epochs=cfg.epochs)
            run_dir = out / "runs" / f"{variant}-seed{seed}"
            say(f"[bold]2/3[/] training {variant} (seed {seed}): {recipe.text}")
            done = (run_dir / "card.toml").exists()
            if not done:
                train_set = digits("train")
                if cfg.train_limit:
                    from .data.sources import ArraySource

                    train_set = ArraySource(train_set.images[:cfg.train_limit], train_set.labels[:cfg.train_limit],
                                            train_set.classes)
                resume = (run_dir / "checkpoint.pt").exists()
                Trainer(recipe, TrainConfig(out=str(run_dir), seed=seed, resume=resume, batched=cfg.batched,
                                            progress=cfg.progress), train_set=train_set).fit()
            model = build(recipe.arch, num_classes=10)
            load_weights(model, run_dir / "model.safetensors")
            say(f"[bold]3/3[/] evaluating {variant} (seed {seed}) on the corrupted digits")
            res = evaluate(model, "cifar10-c", str(corrupted), source="official", clean_data=str(clean_root),
                           corruptions=corruptions, severities=tuple(cfg.severities),
                           preprocess=Preprocess(mean=recipe.mean, std=recipe.std),
                           model_info={"id": f"digits-smallcnn-{variant}-seed{seed}", "builder": recipe.arch,
                                       "card": str(run_dir / "card.toml")},
                           out=str(out / "results"), name=f"{variant}-seed{seed}", progress=cfg.progress,
                           n_boot=200, extra_provenance={"data": "scikit-learn digits (test split), 32 px"})
            results[variant].append(res.data)
    report = write_report(out, results)
    from .report import paper

    return {"results": results, "report": report,
            "grid": paper.table_to_rich(paper.paper_table(*_board(out, results)[::-1]))}


def summary(results: dict[str, list[dict]]) -> list[dict]:
    """Per variant: mean and spread over seeds of the clean error, mean corruption error, RMS calibration
    error (corrupted), and the corruptions with the largest mean error (all in %)."""
    rows = []
    for variant, docs in results.items():
        def stat(key, docs=docs):
            vals = [100 * d["aggregates"][key] for d in docs if d["aggregates"].get(key) is not None]
            if not vals:
                return None, None
            return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)

        per_c: dict[str, list[float]] = {}
        for d in docs:
            for c, e in d["aggregates"].get("corruption_error", {}).items():
                per_c.setdefault(c, []).append(100 * e)
        worst = sorted(((statistics.fmean(v), c) for c, v in per_c.items()), reverse=True)[:3]
        rows.append({"variant": variant, "seeds": len(docs), "clean_error": stat("clean_error"),
                     "mean_corruption_error": stat("mean_corruption_error"),
                     "rms_calibration_error": stat("rms_calibration_error"),
                     "per_corruption": {c: statistics.fmean(v) for c, v in per_c.items()},
                     "worst": [(c, e) for e, c in worst]})
    return rows


def _pm(v: tuple) -> str:
    m, s = v
    if m is None:
        return "-"
    return f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def _versus(rows: list[dict]) -> str:
    from .baselines import get_method

    return " vs ".join(get_method(r["variant"]).label for r in rows)


def table(rows: list[dict]):
    from rich.table import Table

    n = rows[0]["seeds"] if rows else 0
    t = Table(title=f"rb-demo: digits, {_versus(rows)} ({n} seed{'s' if n != 1 else ''}; errors in %, "
                    "lower is better" + ("; mean ± sd" if n > 1 else "") + ")")
    for h in ("training", "clean error", "mean corruption error", "RMS calib. (corrupted)", "worst corruptions"):
        t.add_column(h, justify="left" if h in ("training", "worst corruptions") else "right")
    for r in rows:
        t.add_row(r["variant"], _pm(r["clean_error"]), _pm(r["mean_corruption_error"]),
                  _pm(r["rms_calibration_error"]), ", ".join(f"{c} {e:.1f}" for c, e in r["worst"]))
    return t


def _board(out: Path, results: dict[str, list[dict]]):
    """The result documents (with their file paths) and the leaderboard of every run."""
    from .report import leaderboard

    docs = [dict(d, _path=str(out / "results" / f"{d['model']['id'].split('digits-smallcnn-')[-1]}.json"))
            for v in results.values() for d in v]
    return docs, leaderboard(docs, allow_mixed=True)


def write_report(out: Path, results: dict[str, list[dict]]) -> Path:
    """``report.md``: the comparison over seeds, the per-corruption table and the leaderboard of every run."""
    from .report import to_markdown

    rows = summary(results)
    lines = ["# rb-demo report", "", f"Small CNN on scikit-learn's digits (32 px), {_versus(rows)}; "
             "corrupted test split generated with the CIFAR-10-C tables. Errors in %, lower is better.", "",
             "| training | seeds | clean error | mean corruption error | RMS calib. error (corrupted) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seeds']} | {_pm(r['clean_error'])} | "
                     f"{_pm(r['mean_corruption_error'])} | {_pm(r['rms_calibration_error'])} |")
    corr = list(rows[0]["per_corruption"]) if rows else []
    lines += ["", "Per corruption (error %, mean over seeds):", "", "| training | " + " | ".join(corr) + " |",
              "|---|" + "---:|" * len(corr)]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(f"{r['per_corruption'][c]:.1f}" for c in corr) + " |")
    docs, board = _board(out, results)
    from .report import paper

    grid = paper.paper_table(board, docs)
    lines += ["", "## In the layout of the AugMix paper's Table 1", "", paper.table_to_markdown(grid)]
    lines += ["", "## Every run", "", to_markdown(board), "",
              "Plots: `plots/*.png`; everything in one offline page: `report.html`."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from .report.html import ordered, write_html
    from .report.plots import write_plots

    n = rows[0]["seeds"] if rows else 0
    comparison = (_versus(rows), f"Over {n} training seed{'s' if n != 1 else ''}: mean"
                  + (" ± standard deviation across seeds" if n > 1 else " (one seed: no spread)") + "; errors in %.",
                  ["training", "seeds", "clean error", "mean corruption error", "RMS calib. error (corrupted)"],
                  [[r["variant"], str(r["seeds"]), _pm(r["clean_error"]), _pm(r["mean_corruption_error"]),
                    _pm(r["rms_calibration_error"])] for r in rows])
    write_html(board, docs, out / "report.html", write_plots(ordered(board, docs), out / "plots"),
               title=f"rb-demo: {_versus(rows)} on corrupted digits", sections=[comparison, paper.table_section(grid)])
    return path


def deltas(results: dict[str, list[dict]], method: str = "augmix", base: str = "standard") -> dict[str, list[float]]:
    """Per seed, ``method`` minus ``base``, in points: clean error, mean corruption error, RMS calibration."""
    out: dict[str, list[float]] = {}
    for k in ("clean_error", "mean_corruption_error", "rms_calibration_error"):
        out[k] = [100 * (a["aggregates"][k] - s["aggregates"][k]) for s, a in zip(results[base],
                                                                                    results[method], strict=True)]
    return out
