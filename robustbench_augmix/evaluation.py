"""Evaluate a classifier on a corruption suite: streaming, resumable, exact under torchrun.

The images are cut into fixed chunks (``chunk_size`` images, independent of the batch size and of the
number of processes). For each chunk and each (corruption, severity) cell the per-image outcomes
(top-1 / top-5 correct, confidence, NLL) are kept, and a chunk's outcomes are written atomically to
``<out>/<run>.cells/chunk-<k>.npz`` as soon as the chunk is done. A restarted run reads them back and
computes only what is missing; a cache made by a different model, suite table, data, seed or
preprocessing is refused. Under torchrun each rank takes every ``world``-th chunk, so no image is
counted twice, and the final numbers are computed from the per-image outcomes of all chunks: the
result equals a single-process run.

With ``source="generate"`` each clean batch is decoded once and corrupted on the model's device for
every pending cell, with the per-image seeds ``rb-corrupt`` uses, quantised to 8 bits as stored files
are, and for the ImageFolder suites passed through the JPEG (quality 85) round trip that the released
ImageNet-C / Tiny-ImageNet-C files went through (``storage_jpeg``), so on-the-fly numbers equal numbers
on files written by ``rb-corrupt``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from ._alloc import release_free_memory
from .corruptions import REGISTRY, corrupt_levels, load_suite
from .corruptions._ops import levels_to_float
from .corruptions.digital import jpeg_roundtrip_levels
from .corruptions.suites import SEVERITIES, Suite
from .data.sources import (
    ArraySource,
    CifarSource,
    DatasetMissing,
    OfficialFolderSource,
    OfficialNpySource,
    open_source,
)
from .generate import _json_dump, atomic_write, versions

SCHEMA = "robustbench-augmix/results/1"
CLEAN: tuple[str, int] = ("clean", 0)
FIELDS = ("correct", "correct5", "confidence", "nll")
# Forward passes between two trims of the heap on the CPU: often enough to keep memory flat, rarely
# enough that batches reuse pages already mapped (measured in robustbench_augmix/_alloc.py).
TRIM_EVERY = 64
# The calibration error is not linear in the per-image outcomes: each replicate re-bins the pooled
# corrupted set (750k samples for CIFAR-10-C), so its interval uses the first 200 replicates only.
CALIBRATION_REPLICATES = 200


class EvaluationError(ValueError):
    """A user-facing problem with the evaluation's inputs (shown without a traceback by rb-eval)."""


class CacheMismatch(EvaluationError):
    pass


# ---------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocess:
    """What the model expects after corruption: optional resize of the shorter side, centre crop,
    then ``(x - mean) / std``. Images arrive as float (N, 3, H, W) in [0, 1] at the suite's size."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: int | None = None
    crop: int | None = None
    interpolation: str = "bilinear"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None and min(x.shape[-2:]) != self.resize:
            h, w = x.shape[-2:]
            size = (self.resize, round(w * self.resize / h)) if h <= w else (round(h * self.resize / w), self.resize)
            x = F.interpolate(x, size=size, mode=self.interpolation, antialias=True, align_corners=False)
        if self.crop is not None and tuple(x.shape[-2:]) != (self.crop, self.crop):
            h, w = x.shape[-2:]
            if h < self.crop or w < self.crop:
                raise EvaluationError(f"images of {h}x{w} px are smaller than the model's crop {self.crop}")
            top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
            x = x[..., top : top + self.crop, left : left + self.crop]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _short(v) -> str:
    """A value of a run's identity for an error message: long hashes cut to 12 characters."""
    if isinstance(v, str) and len(v) > 16:
        return v[:12] + "..."
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): the identity of the weights."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------- the run
@dataclass
class Config:
    suite: str = "cifar10-c"
    data: str | ArraySource | None = None
    source: str = "auto"                 # "generate" | "official" | "auto"
    clean_data: str | None = None        # clean set when source="official"
    corruptions: Sequence[str] | None = None
    extra: bool = False
    severities: Sequence[int] = SEVERITIES
    clean: bool = True
    batch_size: int = 128
    chunk_size: int = 2000
    device: str = "cpu"
    workers: int = 0
    amp: bool = False
    channels_last: bool = False
    limit: int | None = None
    seed: int = 0
    storage_jpeg: bool | None = None     # default: on for the ImageFolder suites
    out: str | None = None
    name: str | None = None
    n_boot: int = 1000
    calibration_reference_quirk: bool = False
    baseline: str | None = None          # a results JSON; default: the suite table's baseline
    progress: bool = True
    extra_provenance: dict = field(default_factory=dict)
    # The model's class names in the order of its outputs (a zoo card's `classes`): ImageFolder labels
    # are then mapped by folder name, so a subset of the classes, or another order, scores correctly.
    classes: Sequence[str] | None = None


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s).strip("_") or "model"


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Evaluation:
    def __init__(self, model: torch.nn.Module, config: Config, preprocess: Preprocess | None = None,
                 model_info: Mapping | None = None) -> None:
        self.cfg = cfg = config
        try:
            self.suite: Suite = load_suite(cfg.suite)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
        self.rank, self.world = _dist_info()
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device).eval()
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocess = preprocess or getattr(model, "rba_preprocess", None) or Preprocess()
        self.model_info = {"id": model.__class__.__name__, **(model_info or {})}
        self.model_info["fingerprint"] = model_fingerprint(model)
        self.model_info.setdefault("params", sum(p.numel() for p in model.parameters()))

        names = list(cfg.corruptions) if cfg.corruptions else self.suite.names(extra=cfg.extra)
        for c in names:
            if c not in self.suite.corruptions:
                raise EvaluationError(f"unknown corruption {c!r} for {self.suite.id}; accepted: "
                                      f"{', '.join(self.suite.names(extra=True))}")
        bad = [s for s in cfg.severities if s not in SEVERITIES]
        if bad:
            raise EvaluationError(f"severities must be in 1..5, got {bad}")
        self.corruptions, self.severities = names, sorted(set(int(s) for s in cfg.severities))
        self.cells = ([CLEAN] if cfg.clean else []) + [(c, s) for c in names for s in self.severities]

        self.source_kind = cfg.source
        if self.source_kind == "auto":
            self.source_kind = "generate"
        if self.source_kind not in ("generate", "official"):
            raise EvaluationError(f"source must be 'generate' or 'official', got {cfg.source!r}")
        if self.source_kind == "generate":
            missing = [c for c in names if c not in REGISTRY]
            if missing:
                raise EvaluationError(f"{missing} have no kernel in this version yet; leave them out with "
                                      "--corruptions, or evaluate on official files (--source official)")
        self.storage_jpeg = (self.suite.layout == "imagefolder") if cfg.storage_jpeg is None else cfg.storage_jpeg
        self._open_data()
        self.out = Path(cfg.out).expanduser() if cfg.out else None
        if self.world > 1 and self.out is None:
            raise EvaluationError("under torchrun, pass --out: the ranks exchange their chunks through it")
        self.name = cfg.name or f"{_safe_name(self.model_info['id'])}__{self.suite.id}"
        self._num_classes_checked = False
        self._passes = 0  # forward passes so far (the heap is trimmed every TRIM_EVERY on the CPU)

    # ------------------------------------------------------------------ data
    def _open_data(self) -> None:
        cfg = self.cfg
        try:
            if self.source_kind == "generate":
                self.clean_src = (CifarSource.open(None, self.suite.meta["dataset"])
                                  if cfg.data is None and self.suite.layout == "npy" else self._clean(cfg.data))
                self.official = None
            else:
                if cfg.data is None:
                    raise EvaluationError("--source official needs --data: the folder of the pre-generated suite")
                cls = OfficialNpySource if self.suite.layout == "npy" else OfficialFolderSource
                corr = [c for c, _ in self.cells if c != "clean"]
                self.official = cls(cfg.data, corr or self.corruptions, self.severities) if corr else None
                self.clean_src = None
                if cfg.clean:
                    if cfg.clean_data is None and self.suite.layout != "npy":
                        raise EvaluationError("the clean error needs the clean images: pass --clean-data "
                                              "(e.g. /datasets/imagenet/val), or --no-clean to skip it")
                    try:
                        self.clean_src = (CifarSource.open(None, self.suite.meta["dataset"])
                                          if cfg.clean_data is None else self._clean(cfg.clean_data))
                    except DatasetMissing as e:
                        raise EvaluationError(f"the clean error needs the clean test set: pass --clean-data DIR, "
                                              f"or --no-clean to skip it. ({e})") from None
        except DatasetMissing as e:
            raise EvaluationError(str(e)) from None
        srcs = [s for s in (self.clean_src, self.official) if s is not None]
        n = {len(s) for s in srcs}
        if len(n) != 1:
            raise EvaluationError(f"the clean set has {len(self.clean_src)} images but the corrupted set "
                                  f"{len(self.official)}; they must be the same test set")
        labels = [np.asarray(s.labels) for s in srcs]
        if len(labels) == 2 and not np.array_equal(labels[0], labels[1]):
            raise EvaluationError("the clean and corrupted sets have different labels; they must be the same "
                                  "test set in the same order")
        self.labels = torch.as_tensor(labels[0])
        self.n = n.pop() if self.cfg.limit is None else min(self.cfg.limit, n.pop())
        self.class_order = "folder names, sorted"
        if isinstance(srcs[0], ArraySource) and (srcs[0].classes or self.suite.layout != "npy"):
            self.num_classes = len(srcs[0].classes) if srcs[0].classes else int(srcs[0].labels.max()) + 1
        elif self.suite.layout == "npy":
            self.num_classes = {"cifar10": 10, "cifar100": 100}[self.suite.meta["dataset"]]
            self.class_order = f"{self.suite.meta['dataset']} label order"
        else:
            self.num_classes = len(srcs[0].classes)
        if self.cfg.classes is not None and self.suite.layout != "npy":
            self._map_classes(list(srcs[0].classes or []), list(self.cfg.classes))

    def _map_classes(self, folders: list[str], model_classes: list[str]) -> None:
        """Relabel folder indices to the model's output indices by class name, checked."""
        where = {c: i for i, c in enumerate(model_classes)}
        unknown = [f for f in folders if f not in where]
        if unknown:
            raise EvaluationError(
                f"{len(unknown)} of the data's {len(folders)} class folders are not classes of this model "
                f"(e.g. {', '.join(unknown[:3])}); the model's classes are named like "
                f"{', '.join(model_classes[:3])}. Name the folders by those class names (ImageNet: the WNIDs), "
                "or evaluate with a model whose classes match the data")
        lut = torch.as_tensor([where[f] for f in folders], dtype=torch.int64)
        self.labels = lut[self.labels]
        self.num_classes = len(model_classes)
        self.class_order = f"by name into the model's {len(model_classes)} classes ({len(folders)} present)"

    def _clean(self, path):
        if isinstance(path, ArraySource):
            return path
        if path is None:
            raise EvaluationError(f"--data is required for {self.suite.id}: the clean images as an ImageFolder tree")
        return open_source(path, self.suite)

    # ------------------------------------------------------------------ identity and cache
    def identity(self) -> dict:
        return {
            "schema": SCHEMA, "model": self.model_info["fingerprint"], "suite": self.suite.id,
            "table_hash": self.suite.table_hash, "source": self.source_kind, "seed": self.cfg.seed,
            "storage_jpeg": self.storage_jpeg, "preprocess": self.preprocess.to_dict(), "n_images": self.n,
            "labels": hashlib.sha256(self.labels[: self.n].numpy().tobytes()).hexdigest()[:16],
            "chunk_size": self.cfg.chunk_size, "amp": self.cfg.amp,
        }

    @property
    def cache_dir(self) -> Path | None:
        return None if self.out is None else self.out / f"{self.name}.cells"

    def _check_cache(self) -> None:
        d = self.cache_dir
        if d is None:
            return
        ident = self.identity()
        path = d / "run.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != ident:
                diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
                shown = "; ".join(f"{k}: {_short(old.get(k))} there, {_short(ident.get(k))} now" for k in diff)
                hint = (" The model's weights differ (sha256 of its state dict): a factory that builds untrained"
                        " or randomly initialised weights must seed them (torch.manual_seed) to resume."
                        if "model" in diff else "")
                raise CacheMismatch(
                    f"{d} holds cells of a different run ({shown}).{hint} Its numbers cannot be mixed with "
                    "this run's: pass another --out or --name, or delete that folder to start over."
                )
        elif self.rank == 0:
            _json_dump(path, ident)

    def _chunk_path(self, k: int) -> Path:
        return self.cache_dir / f"chunk-{k:05d}.npz"

    def _load_chunk(self, k: int) -> dict[tuple[str, int], dict[str, np.ndarray]]:
        if self.cache_dir is None or not self._chunk_path(k).exists():
            return {}
        out: dict = {}
        with np.load(self._chunk_path(k)) as z:
            for key in z.files:
                c, s, f = key.split("|")
                out.setdefault((c, int(s)), {})[f] = z[key]
        return out

    def _save_chunk(self, k: int, cells: Mapping) -> None:
        arrays = {f"{c}|{s}|{f}": v for (c, s), d in cells.items() for f, v in d.items()}

        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(self._chunk_path(k), write)

    # ------------------------------------------------------------------ compute
    def _loader(self, read: Callable[[int], np.ndarray], idx: Sequence[int]):
        ds = _Items(read, list(idx))
        return torch.utils.data.DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=False,
                                           num_workers=self.cfg.workers, collate_fn=_collate)

    def _corrupt(self, x: torch.Tensor, c: str, s: int, idx: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) clean images -> float [0, 1] corrupted ones, as ``rb-corrupt`` writes them."""
        y = corrupt_levels(x, c, s, suite=self.suite.id, seed=self.cfg.seed, index=idx.tolist())
        if self.storage_jpeg:
            q = self.suite.jpeg_quality or 85
            y = jpeg_roundtrip_levels(y, q)
        # The kernels return contiguous NCHW levels, so the piecewise conversion keeps their layout.
        return levels_to_float(y)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
        # One memory layout whatever the source produced (permuted decodes, gathered kernels), so the
        # same pixels always give bit-identical logits.
        x = self.preprocess(x).contiguous(
            memory_format=torch.channels_last if self.cfg.channels_last else torch.contiguous_format)
        ctx = (torch.autocast(self.device.type, dtype=torch.float16 if self.device.type == "cuda" else torch.bfloat16)
               if self.cfg.amp else contextlib.nullcontext())
        with ctx:
            logits = self.model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits = logits.float()
        if not self._num_classes_checked:
            if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                raise EvaluationError(
                    f"the model outputs {tuple(logits.shape[1:])} scores per image but the {self.suite.id} data has "
                    f"{self.num_classes} classes; evaluate a model trained on this dataset (or fix its head)")
            self._num_classes_checked = True
        y = y.to(logits.device)
        logp = torch.log_softmax(logits, dim=1)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return {
            "correct": (top[:, 0] == y).cpu().numpy(),
            "correct5": (top == y[:, None]).any(dim=1).cpu().numpy(),
            "confidence": logp.max(dim=1).values.exp().cpu().numpy().astype(np.float32),
            "nll": (-logp.gather(1, y[:, None])[:, 0]).cpu().numpy().astype(np.float32),
        }

    def _run_chunk(self, k: int, idx: list[int], pending: list[tuple[str, int]], advance) -> dict:
        parts: dict = {cell: {f: [] for f in FIELDS} for cell in pending}

        def add(cell, stats):
            for f in FIELDS:
                parts[cell][f].append(stats[f])
            advance(cell[0], len(stats["correct"]))
            self._passes += 1
            if self.device.type == "cpu" and self._passes % TRIM_EVERY == 0:
                release_free_memory()

        on_clean = [cell for cell in pending if cell == CLEAN or self.source_kind == "generate"]
        if on_clean:
            for u8, ii in self._loader(self.clean_src.read, idx):
                u8 = u8.to(self.device).permute(0, 3, 1, 2)
                x = u8.float() / 255 if CLEAN in on_clean else None  # clean may be cached already
                y = self.labels[ii]
                for cell in on_clean:
                    # The corruptions take the 8-bit images: JPEG and pixelate then skip the float round trip.
                    add(cell, self._forward(x if cell == CLEAN else self._corrupt(u8, *cell, ii), y))
        for cell in pending:
            if cell in on_clean:
                continue
            read = _CellReader(self.official, *cell)
            for u8, ii in self._loader(read, idx):
                add(cell, self._forward(u8.to(self.device).permute(0, 3, 1, 2).float() / 255, self.labels[ii]))
        return {cell: {f: np.concatenate(v) for f, v in d.items()} for cell, d in parts.items()}

    def run(self) -> Results:
        t0 = time.perf_counter()
        cs = self.cfg.chunk_size
        chunks = [list(range(a, min(a + cs, self.n))) for a in range(0, self.n, cs)]
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._barrier()
        self._check_cache()
        mine = [k for k in range(len(chunks)) if k % self.world == self.rank]
        cached = {k: self._load_chunk(k) for k in mine}
        todo = {k: [c for c in self.cells if c not in cached[k]] for k in mine}
        totals: dict[str, int] = {}
        for k in mine:
            for c, _ in todo[k]:
                totals[c] = totals.get(c, 0) + len(chunks[k])
        done_before = sum(len(chunks[k]) * (len(self.cells) - len(todo[k])) for k in mine)
        with _progress(self.cfg.progress and bool(totals), totals, f"{self.name}") as advance:
            for k in mine:
                if not todo[k]:
                    continue
                new = self._run_chunk(k, chunks[k], todo[k], advance)
                cached[k].update(new)
                if self.cache_dir is not None:
                    self._save_chunk(k, cached[k])
        self._barrier()
        # Every rank now reads all chunks (they are on the shared --out); without a cache there is one rank.
        outcomes: dict = {cell: {f: [] for f in FIELDS} for cell in self.cells}
        for k in range(len(chunks)):
            data = cached[k] if k in cached else self._load_chunk(k)
            for cell in self.cells:
                if cell not in data:
                    raise EvaluationError(f"chunk {k} of {self.cache_dir} lacks cell {cell}; under torchrun, --out "
                                          "must be a folder that every rank can read")
                for f in FIELDS:
                    outcomes[cell][f].append(data[cell][f])
        outcomes = {cell: {f: np.concatenate(v) for f, v in d.items()} for cell, d in outcomes.items()}
        res = Results(self._result_dict(outcomes, time.perf_counter() - t0, done_before), outcomes)
        if self.out is not None and self.rank == 0:
            res.save(self.out / f"{self.name}.json")
        return res

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    # ------------------------------------------------------------------ results
    def _baseline(self) -> dict | None:
        if self.cfg.baseline:
            path = Path(self.cfg.baseline).expanduser()
            try:
                other = json.loads(path.read_text())
                cells = {(c["corruption"], c["severity"]): c["error"] for c in other["cells"]}
                return {"name": other["model"]["id"], "source": str(path), "suite": other["suite"]["id"],
                        "table_hash": other["suite"]["table_hash"], "clean_error": cells.get(CLEAN),
                        "errors": {f"{c}/{s}": e for (c, s), e in cells.items() if c != "clean"}}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise EvaluationError(f"--baseline {path} is not a results file written by rb-eval ({e})") from None
        b = self.suite.baseline
        if b is None:
            return None
        return {"name": b["name"], "source": b["source"], "suite": self.suite.id, "table_hash": self.suite.table_hash,
                "clean_error": b.get("clean_error"),
                "errors": {f"{c}/{s}": spec.alexnet_error[s - 1] for c, spec in self.suite.corruptions.items()
                           if spec.alexnet_error for s in SEVERITIES}}

    def _result_dict(self, outcomes: Mapping, wall: float, done_before: int) -> dict:
        cfg = self.cfg
        cfg_q = cfg.calibration_reference_quirk
        cells = []
        for (c, s) in self.cells:
            o = outcomes[(c, s)]
            n = len(o["correct"])
            cells.append({
                "corruption": c, "severity": s, "n": n, "correct": int(o["correct"].sum()),
                "correct5": int(o["correct5"].sum()), "error": metrics.error(o["correct"]),
                "top5_error": metrics.error(o["correct5"]), "nll": float(o["nll"].astype(np.float64).mean()),
                "rms_calibration_error": _rms(o, cfg_q), "ece": metrics.expected_calibration_error(
                    o["confidence"], o["correct"]),
                "reliability": metrics.reliability_bins(o["confidence"], o["correct"]),
            })
        baseline = self._baseline()
        agg, intervals = summarize(outcomes, self.suite, self.corruptions, self.severities, baseline,
                                   n_boot=cfg.n_boot, seed=cfg.seed, reference_quirk=cfg_q)
        complete = (cfg.limit is None and set(self.suite.names()) <= set(self.corruptions)
                    and self.severities == list(SEVERITIES) and cfg.clean)
        dev = self.device
        return {
            "schema": SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {**self.model_info, "num_classes": self.num_classes},
            "suite": {"id": self.suite.id, "name": self.suite.name, "table_hash": self.suite.table_hash,
                      "image_size": self.suite.image_size, "generator": self.suite.generator},
            "data": {"source": self.source_kind,
                     "path": None if cfg.data is None else "<in memory>" if isinstance(cfg.data, ArraySource)
                     else str(cfg.data),
                     "clean_path": str(cfg.clean_data) if cfg.clean_data else None, "n_images": self.n,
                     "limit": cfg.limit, "seed": cfg.seed, "class_order": self.class_order,
                     "storage_jpeg": (self.suite.jpeg_quality or 85) if self.storage_jpeg else None},
            "preprocess": self.preprocess.to_dict(),
            "protocol": {"corruptions": self.corruptions, "severities": self.severities, "clean": cfg.clean,
                         "complete": complete, "comparable": complete,
                         "calibration": {"confidence": "max softmax", "bin_size": 100, "reference_quirk": cfg_q,
                                         "ece_bins": 15},
                         "bootstrap": {"replicates": cfg.n_boot, "seed": cfg.seed, "level": 0.95,
                                       "calibration_replicates": min(cfg.n_boot, CALIBRATION_REPLICATES),
                                       "unit": "image (paired across cells)"}},
            "cells": cells,
            "aggregates": agg,
            "intervals": intervals,
            "baseline": baseline,
            "environment": {"versions": versions(), "device": str(dev),
                            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                            "world_size": self.world, "batch_size": cfg.batch_size, "amp": cfg.amp,
                            "channels_last": cfg.channels_last, "threads": torch.get_num_threads()},
            "wall_time_s": round(wall, 3),
            "resumed_image_cells": done_before,
            **({"provenance": cfg.extra_provenance} if cfg.extra_provenance else {}),
        }


def _rms(o: Mapping, quirk: bool) -> float | None:
    try:
        return metrics.rms_calibration_error(o["confidence"], o["correct"], reference_quirk=quirk)
    except ValueError:  # the reference definition is undefined below 100 samples
        return None


def summarize(outcomes: Mapping, suite: Suite, corruptions: Sequence[str], severities: Sequence[int],
              baseline: Mapping | None, *, n_boot: int, seed: int, reference_quirk: bool = False
              ) -> tuple[dict, dict]:
    """Aggregates and bootstrap intervals from per-image outcomes ``{(c, s): {field: (N,)}}``."""
    err = {cell: metrics.error(o["correct"]) for cell, o in outcomes.items()}
    bench = [c for c in corruptions if c in suite.names()]
    corr_cells = [(c, s) for c in bench for s in severities]
    agg: dict = {}
    intervals: dict = {}
    w = metrics.bootstrap_weights(len(next(iter(outcomes.values()))["correct"]), n_boot, seed) if n_boot else None

    def interval(name, correct_rows, coef, offset):
        if w is not None:
            intervals[name] = list(metrics.linear_error_interval(np.stack(correct_rows), np.asarray(coef), offset, w))

    if CLEAN in outcomes:
        o = outcomes[CLEAN]
        agg["clean_error"] = err[CLEAN]
        agg["clean_top5_error"] = metrics.error(o["correct5"])
        agg["clean_nll"] = float(o["nll"].astype(np.float64).mean())
        agg["clean_rms_calibration_error"] = _rms(o, reference_quirk)
        agg["clean_ece"] = metrics.expected_calibration_error(o["confidence"], o["correct"])
        interval("clean_error", [o["correct"]], [1.0], 1.0)
        if w is not None and agg["clean_rms_calibration_error"] is not None:
            intervals["clean_rms_calibration_error"] = _rms_interval([o], w[:CALIBRATION_REPLICATES], reference_quirk)
    per = metrics.corruption_errors({cell: e for cell, e in err.items() if cell != CLEAN})
    agg["corruption_error"] = per
    if bench:
        agg["mean_corruption_error"] = metrics.mean_corruption_error({k: err[k] for k in corr_cells}, bench)
        agg["mean_corruption_error_over"] = bench
        coef = [1.0 / (len(bench) * len(severities))] * len(corr_cells)
        interval("mean_corruption_error", [outcomes[k]["correct"] for k in corr_cells], coef, 1.0)
        pooled = [outcomes[k] for k in corr_cells]
        conf = np.concatenate([o["confidence"] for o in pooled])
        corr = np.concatenate([o["correct"] for o in pooled])
        agg["rms_calibration_error"] = metrics.rms_calibration_error(conf, corr, reference_quirk=reference_quirk)
        agg["ece"] = metrics.expected_calibration_error(conf, corr)
        agg["nll"] = float(np.concatenate([o["nll"] for o in pooled]).astype(np.float64).mean())
        if w is not None:
            intervals["rms_calibration_error"] = _rms_interval(pooled, w[:CALIBRATION_REPLICATES], reference_quirk)
    if baseline is not None and bench:
        base = {(k.split("/")[0], int(k.split("/")[1])): v for k, v in baseline["errors"].items()}
        have = [c for c in bench if all((c, s) in base for s in severities)]
        if have:
            cells_h = {k: err[k] for k in corr_cells if k[0] in have}
            agg["ce"] = {c: metrics.corruption_error([err[(c, s)] for s in severities],
                                                     [base[(c, s)] for s in severities]) for c in have}
            agg["mce"] = metrics.mce(cells_h, base, have)
            agg["mce_over"] = have
            # mCE = sum_cs k_cs * E_cs with k_cs = 1 / (C * sum_s A_cs): linear in the cell accuracies.
            ks = [1.0 / (len(have) * sum(base[(c, t)] for t in severities)) for c in have for s in severities]
            rows = [outcomes[(c, s)]["correct"] for c in have for s in severities]
            interval("mce", rows, ks, float(sum(ks)))
            bc = baseline.get("clean_error")
            flat = [c for c in have if sum(base[(c, t)] - bc for t in severities) == 0] if bc is not None else []
            if flat:
                agg["relative_mce_undefined"] = f"the baseline's error on {flat} equals its clean error"
            elif CLEAN in outcomes and bc is not None:
                agg["relative_ce"] = {c: metrics.relative_corruption_error(
                    [err[(c, s)] for s in severities], err[CLEAN], [base[(c, s)] for s in severities], bc)
                    for c in have}
                agg["relative_mce"] = metrics.relative_mce(cells_h, err[CLEAN], base, bc, have)
                # relative mCE = sum_cs r_c (E_cs - E_clean) with r_c = 1 / (C * sum_s (A_cs - A_clean)).
                rs = [1.0 / (len(have) * sum(base[(c, t)] - bc for t in severities)) for c in have]
                coef = [r for r in rs for _ in severities] + [-sum(rs) * len(severities)]
                rows_r = rows + [outcomes[CLEAN]["correct"]]
                interval("relative_mce", rows_r, coef, float(sum(coef)))
    return agg, intervals


def _rms_interval(parts: Sequence[Mapping], w: np.ndarray, quirk: bool, level: float = 0.95) -> list[float] | None:
    """Bootstrap interval of the RMS calibration error pooled over cells that share the images."""
    conf = np.concatenate([o["confidence"] for o in parts]).astype(np.float64)
    corr = np.concatenate([o["correct"] for o in parts]).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    conf, corr = conf[order], corr[order]
    n = len(parts[0]["correct"])
    image = np.tile(np.arange(n), len(parts))[order]
    vals = []
    for wb in w:
        try:
            vals.append(metrics.rms_calibration_error(conf, corr, weights=wb[image], reference_quirk=quirk,
                                                      presorted=True))
        except ValueError:
            return None
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


class _Items(torch.utils.data.Dataset):
    def __init__(self, read: Callable[[int], np.ndarray], idx: list[int]) -> None:
        self.read, self.idx = read, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, k: int):
        i = self.idx[k]
        return torch.from_numpy(np.array(self.read(i), dtype=np.uint8, copy=True)), i


class _CellReader:
    def __init__(self, src, c: str, s: int) -> None:
        self.src, self.c, self.s = src, c, s

    def __call__(self, i: int) -> np.ndarray:
        return self.src.read(self.c, self.s, i)


def _collate(items):
    imgs, idx = zip(*items, strict=True)
    shapes = {tuple(t.shape) for t in imgs}
    if len(shapes) != 1:
        raise EvaluationError(f"images of different sizes in one batch ({sorted(shapes)[:3]}); the suite's images "
                              "must all have the same size")
    return torch.stack(imgs), torch.tensor(idx, dtype=torch.long)


@contextlib.contextmanager
def _progress(enabled: bool, totals: Mapping[str, int], name: str):
    """A bar for the run and one per corruption (clean apart), on stderr, each with its own images/s.

    Every chunk of images goes through all its cells before the next chunk, so the cells advance
    together; the time between two updates is the cost of the cell just finished, so each bar's rate is
    that corruption's own throughput (the slow ones stand out), and the run's bar has the ETA.
    Yields ``advance(corruption, n_images)``.
    """
    if not enabled:
        yield lambda group, n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    t0 = last = time.perf_counter()
    with Progress(*cols, console=Console(stderr=True), transient=False) as prog:
        run = prog.add_task(f"[bold]{name}", total=sum(totals.values()), rate="")
        width = max(map(len, totals))
        bars = {g: prog.add_task(f"  {g:<{width}}", total=t, rate="") for g, t in totals.items()}
        spent = dict.fromkeys(totals, 0.0)
        done = dict.fromkeys(totals, 0)

        def advance(group: str, n: int) -> None:
            nonlocal last
            now = time.perf_counter()
            spent[group] += now - last
            last = now
            done[group] += n
            prog.update(bars[group], advance=n, rate=f"{done[group] / max(spent[group], 1e-9):,.0f} img/s")
            prog.update(run, advance=n, rate=f"{sum(done.values()) / max(now - t0, 1e-9):,.0f} img/s")

        yield advance


# ---------------------------------------------------------------------------------- results
class Results:
    """The outcome of :func:`evaluate`: ``results.data`` is the JSON document; ``results.outcomes`` the
    per-image outcomes per cell (not saved)."""

    def __init__(self, data: dict, outcomes: Mapping | None = None) -> None:
        self.data = data
        self.outcomes = outcomes

    def __getitem__(self, key: str):
        return self.data[key]

    @property
    def aggregates(self) -> dict:
        return self.data["aggregates"]

    @classmethod
    def load(cls, path: str | Path) -> Results:
        return cls(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON) and the tidy per-cell CSV beside it, each atomically."""
        path = Path(path)
        _json_dump(path, self.data)
        atomic_write(path.with_suffix(".csv"), lambda p: p.write_text(self.csv()))
        return path

    def csv(self) -> str:
        import csv
        import io

        cols = ["model", "suite", "corruption", "severity", "n", "correct", "correct5", "error", "top5_error",
                "nll", "rms_calibration_error", "ece"]
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        wr.writeheader()
        for c in self.data["cells"]:
            wr.writerow({"model": self.data["model"]["id"], "suite": self.data["suite"]["id"],
                         **{k: c[k] for k in cols[2:]}})
        return buf.getvalue()

    def table(self):
        """A rich table of the headline numbers (percent)."""
        from rich.table import Table

        a, iv = self.data["aggregates"], self.data["intervals"]

        def pct(key, src=a):
            v = src.get(key)
            if v is None:
                return "-"
            s = f"{100 * v:.2f}"
            if key in iv:
                s += f"  [dim]({100 * iv[key][0]:.2f}-{100 * iv[key][1]:.2f})[/]"
            return s

        t = Table(title=f"{self.data['model']['id']} on {self.data['suite']['id']}"
                  + ("" if self.data["protocol"]["complete"] else "  [yellow](partial: not comparable)[/]"))
        t.add_column("metric")
        t.add_column("value (%), 95% CI")
        t.add_row("clean error", pct("clean_error"))
        t.add_row("mean corruption error", pct("mean_corruption_error"))
        if "mce" in a:
            t.add_row(f"mCE (vs {self.data['baseline']['name']})", pct("mce"))
        if "relative_mce" in a:
            t.add_row("relative mCE", pct("relative_mce"))
        t.add_row("RMS calibration error, clean", pct("clean_rms_calibration_error"))
        t.add_row("RMS calibration error, corrupted", pct("rms_calibration_error"))
        worst = sorted(a.get("corruption_error", {}).items(), key=lambda kv: -kv[1])[:3]
        if worst:
            t.add_row("worst corruptions", ", ".join(f"{c} {100 * e:.1f}" for c, e in worst))
        return t


def evaluate(model: torch.nn.Module, suite: str = "cifar10-c", data: str | None = None, *,
             preprocess: Preprocess | None = None, model_info: Mapping | None = None, **kwargs) -> Results:
    """Evaluate ``model`` on every (corruption, severity) cell of ``suite`` (and clean data).

    Args:
        model: a classifier mapping normalised (N, 3, H, W) images to (N, K) logits.
        suite: ``cifar10-c``, ``cifar100-c``, ``tinyimagenet-c`` or ``imagenet-c``.
        data: clean images (CIFAR pickles folder / ImageFolder tree / an in-memory
            :class:`~robustbench_augmix.data.sources.ArraySource`); with ``source="official"``, the
            pre-generated suite. CIFAR is downloaded into the user cache when ``data`` is None.
        preprocess: the model's :class:`Preprocess` (default: ``model.rba_preprocess`` or identity).
        **kwargs: any :class:`Config` field (``corruptions``, ``severities``, ``batch_size``, ``device``,
            ``out``, ``limit``, ``seed``, ``amp``, ``source``, ``clean_data``, ``baseline`` ...).

    Returns:
        :class:`Results`; with ``out`` set, also written to ``<out>/<name>.json`` and ``.csv``.
    """
    unknown = set(kwargs) - set(Config.__dataclass_fields__)
    if unknown:
        raise TypeError(f"evaluate() got unknown arguments {sorted(unknown)}")
    cfg = Config(suite=suite, data=data if data is None or isinstance(data, ArraySource) else str(data), **kwargs)
    return Evaluation(model, cfg, preprocess, model_info).run()

