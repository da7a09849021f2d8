"""The evaluation loop: a model x a suite -> :class:`~.results.Results`.

The images are cut into fixed chunks (``chunk_size`` images, independent of the batch size and of the
number of processes). For each chunk and each (corruption, severity) cell the per-image outcomes
(top-1 / top-5 correct, confidence, NLL) are kept, and a chunk's outcomes are written atomically to
``<out>/<run>.cells/chunk-<k>.npz`` as soon as the chunk is done. A restarted run reads them back and
computes only what is missing; a cache made by a different model, suite table, data, seed,
preprocessing or random-stream device is refused (:mod:`.cache`). Under torchrun each rank takes every
``world``-th chunk, so no image is counted twice, and the final numbers are computed from the per-image
outcomes of all chunks: the result equals a single-process run.

With ``source="generate"`` each clean batch is decoded once and corrupted on the model's device for
every pending cell, with the per-image seeds ``rb-corrupt`` uses, quantised to 8 bits as stored files
are, and for the ImageFolder suites passed through the JPEG (quality 85) round trip that the released
ImageNet-C / Tiny-ImageNet-C files went through (``storage_jpeg``), so on-the-fly numbers equal numbers
on files written by ``rb-corrupt``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._alloc import release_free_memory
from .._common import dist_info, inside, plain_name, progress_bar, versions
from ..corruptions import apply, check_corruption, image_seeds, load_suite, rng_device
from ..corruptions._ops import levels_to_float
from ..corruptions.digital import jpeg_roundtrip_levels
from ..corruptions.suites import SEVERITIES, Suite
from ..data.sources import ArraySource
from ..preprocess import Preprocess
from .cache import SCHEMA, CellCache, EvaluationError, model_fingerprint, run_identity
from .inputs import CellReader, batches, open_data
from .results import Results
from .summary import CALIBRATION_REPLICATES, CLEAN, FIELDS, cell_rows, load_baseline, summarize

# Forward passes between two trims of the heap on the CPU: often enough to keep memory flat, rarely
# enough that batches reuse pages already mapped (measured in robustbench_augmix/_alloc.py).
TRIM_EVERY = 64


@dataclass
class Config:
    suite: str = "cifar10-c"
    data: str | ArraySource | None = None
    source: str = "generate"             # "generate" (corrupt on the fly) | "official" (read pre-generated files)
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
    import re

    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s).strip("_") or "model"


class Evaluation:
    """One evaluation run: ``Evaluation(model, config, preprocess, model_info).run() -> Results``.

    ``corrupt`` and ``forward`` are the two steps of a batch, public so that ``rb-bench eval`` times exactly
    what a run does."""

    def __init__(self, model: torch.nn.Module, config: Config, preprocess: Preprocess | None = None,
                 model_info: Mapping | None = None) -> None:
        self.cfg = cfg = config
        try:
            self.suite: Suite = load_suite(cfg.suite)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
        self.rank, self.world, _ = dist_info()
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
            check_corruption(c, self.suite)
        bad = [s for s in cfg.severities if s not in SEVERITIES]
        if bad:
            raise EvaluationError(f"severities must be in 1..5, got {bad}")
        self.corruptions, self.severities = names, sorted(set(int(s) for s in cfg.severities))
        self.cells = ([CLEAN] if cfg.clean else []) + [(c, s) for c in names for s in self.severities]
        if cfg.source not in ("generate", "official"):
            raise EvaluationError(f"source must be 'generate' or 'official', got {cfg.source!r}")
        self.source_kind = cfg.source
        self.storage_jpeg = (self.suite.layout == "imagefolder") if cfg.storage_jpeg is None else cfg.storage_jpeg
        self.data = open_data(self.suite, source=self.source_kind, data=cfg.data, clean_data=cfg.clean_data,
                              clean=cfg.clean, cells=self.cells, corruptions=names, severities=self.severities,
                              limit=cfg.limit, classes=cfg.classes)
        self.n, self.labels, self.num_classes = self.data.n, self.data.labels, self.data.num_classes
        self.out = Path(cfg.out).expanduser() if cfg.out else None
        for d in (cfg.data, cfg.clean_data):
            if self.out is not None and isinstance(d, (str, Path)) and self.suite.layout == "imagefolder" \
                    and inside(self.out, Path(d)):
                raise EvaluationError(f"--out {self.out} is inside the data folder {d}: its files would be read as "
                                      "data (an extra class folder) by the next run; write the results elsewhere")
        if self.world > 1 and self.out is None:
            raise EvaluationError("under torchrun, pass --out: the ranks exchange their chunks through it")
        self.name = plain_name(cfg.name, "--name") if cfg.name is not None else self._default_name()
        self.cache = CellCache(None if self.out is None else self.out / f"{self.name}.cells")
        self.check_num_classes = True  # rb-bench eval turns it off: its synthetic labels fit any head
        self._passes = 0  # forward passes so far (the heap is trimmed every TRIM_EVERY on the CPU)

    @functools.cached_property
    def data_fingerprint(self) -> str:
        return self.data.fingerprint()

    def _default_name(self) -> str:
        """``<model>__<suite>``, plus what makes another protocol (so that two protocols never share a file):
        ``__official`` (read from files), ``__seed<k>``, ``__first<n>`` (``--limit``), ``__jpeg-on/off``
        (a storage JPEG other than the suite's default). Subsets of corruptions or severities share the
        name: their cells are the same cells, and a later run adds the missing ones."""
        cfg = self.cfg
        parts = [_safe_name(self.model_info["id"]), self.suite.id]
        if self.source_kind == "official":
            parts.append("official")
        if cfg.seed:
            parts.append(f"seed{cfg.seed}")
        if cfg.limit is not None:
            parts.append(f"first{cfg.limit}")
        if cfg.storage_jpeg is not None and cfg.storage_jpeg != (self.suite.layout == "imagefolder"):
            parts.append("jpeg-on" if cfg.storage_jpeg else "jpeg-off")
        return "__".join(parts)

    def space_needed(self) -> int:
        """Bytes a run writes: the chunk cache (4 outcomes of 10 bytes per image and cell) and the results."""
        return self.n * len(self.cells) * 10 + (1 << 20)

    @property
    def cache_dir(self) -> Path | None:
        return self.cache.dir

    def identity(self) -> dict:
        return run_identity(model=self.model_info["fingerprint"], suite=self.suite, source=self.source_kind,
                            data=self.data_fingerprint,
                            seed=self.cfg.seed, storage_jpeg=self.storage_jpeg, preprocess=self.preprocess.to_dict(),
                            labels=self.labels[: self.n].numpy(), chunk_size=self.cfg.chunk_size, amp=self.cfg.amp,
                            device=self.device)

    # ------------------------------------------------------------------ one batch
    def corrupt(self, x: torch.Tensor, c: str, s: int, idx: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) clean images -> float [0, 1] corrupted ones, as ``rb-corrupt`` writes them."""
        seeds = image_seeds(self.cfg.seed, self.suite.id, c, s, idx.tolist())
        y = apply(x, c, s, suite=self.suite.id, seeds=seeds, levels=True)
        if self.storage_jpeg:
            y = jpeg_roundtrip_levels(y, self.suite.jpeg_quality or 85)
        # The kernels return contiguous NCHW levels, so the piecewise conversion keeps their layout.
        return levels_to_float(y)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, y: torch.Tensor, cell: tuple[str, int] | None = None) -> dict[str, np.ndarray]:
        """float (N, 3, H, W) images in [0, 1] and (N,) labels -> the per-image outcomes :data:`FIELDS`.
        Non-finite logits stop the run, naming ``cell``: a NaN model must not get an error rate."""
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
        if self.check_num_classes:
            if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                raise EvaluationError(
                    f"the model outputs {tuple(logits.shape[1:])} scores per image but the {self.suite.id} data has "
                    f"{self.num_classes} classes ({self.data.class_order}); evaluate a model trained on "
                    f"{self.suite.dataset} ({self.suite.num_classes} classes: {self.suite.classes}), or fix its head")
            self.check_num_classes = False
        if not bool(torch.isfinite(logits).all()):
            bad = int((~torch.isfinite(logits)).any(dim=1).sum())
            where = "" if cell is None else f" on {cell[0]}" + ("" if cell == CLEAN else f" severity {cell[1]}")
            raise EvaluationError(
                f"the model gives non-finite scores (NaN or inf) for {bad} of {len(logits)} images{where}; its "
                "weights or its input pipeline are broken (a NaN in the weights, a diverged training run), so "
                "no error rate is computed. Check the checkpoint (e.g. torch.isfinite on every tensor)")
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

        bs, workers = self.cfg.batch_size, self.cfg.workers
        on_clean = [cell for cell in pending if cell == CLEAN or self.source_kind == "generate"]
        if on_clean:
            for u8, ii in batches(self.data.clean.read, idx, bs, workers):
                u8 = u8.to(self.device).permute(0, 3, 1, 2)
                x = u8.float() / 255 if CLEAN in on_clean else None  # clean may be cached already
                y = self.labels[ii]
                for cell in on_clean:
                    # The corruptions take the 8-bit images: JPEG and pixelate then skip the float round trip.
                    add(cell, self.forward(x if cell == CLEAN else self.corrupt(u8, *cell, ii), y, cell))
        for cell in pending:
            if cell in on_clean:
                continue
            for u8, ii in batches(CellReader(self.data.official, *cell), idx, bs, workers):
                add(cell, self.forward(u8.to(self.device).permute(0, 3, 1, 2).float() / 255, self.labels[ii], cell))
        return {cell: {f: np.concatenate(v) for f, v in d.items()} for cell, d in parts.items()}

    # ------------------------------------------------------------------ the run
    def run(self) -> Results:
        t0 = time.perf_counter()
        cs = self.cfg.chunk_size
        chunks = [list(range(a, min(a + cs, self.n))) for a in range(0, self.n, cs)]
        if self.cache.dir is not None:
            self.cache.dir.mkdir(parents=True, exist_ok=True)
        self._barrier()
        # weights built by a factory (not read from a checkpoint or card) differ when unseeded
        self.cache.check(self.identity(), write=self.rank == 0,
                         factory=not {"card", "checkpoint", "weights"} & set(self.model_info))
        mine = [k for k in range(len(chunks)) if k % self.world == self.rank]
        cached = {k: self.cache.load(k) for k in mine}
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
                cached[k].update(self._run_chunk(k, chunks[k], todo[k], advance))
                self.cache.save(k, cached[k])
        self._barrier()
        # Every rank now reads all chunks (they are on the shared --out); without a cache there is one rank.
        outcomes: dict = {cell: {f: [] for f in FIELDS} for cell in self.cells}
        for k in range(len(chunks)):
            data = cached[k] if k in cached else self.cache.load(k)
            for cell in self.cells:
                if cell not in data:
                    raise EvaluationError(f"chunk {k} of {self.cache.dir} lacks cell {cell}; under torchrun, --out "
                                          "must be a folder that every rank can read")
                for f in FIELDS:
                    outcomes[cell][f].append(data[cell][f])
        outcomes = {cell: {f: np.concatenate(v) for f, v in d.items()} for cell, d in outcomes.items()}
        res = Results(self._document(outcomes, time.perf_counter() - t0, done_before), outcomes)
        if self.out is not None and self.rank == 0:
            res.save(self.out / f"{self.name}.json")
        return res

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _document(self, outcomes: Mapping, wall: float, done_before: int) -> dict:
        cfg = self.cfg
        quirk = cfg.calibration_reference_quirk
        baseline = load_baseline(cfg.baseline, self.suite)
        agg, intervals = summarize(outcomes, self.suite, self.corruptions, self.severities, baseline,
                                   n_boot=cfg.n_boot, seed=cfg.seed, reference_quirk=quirk)
        complete = (cfg.limit is None and set(self.suite.names()) <= set(self.corruptions)
                    and self.severities == list(SEVERITIES) and cfg.clean)
        dev = self.device
        return {
            "schema": SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {**self.model_info, "num_classes": self.num_classes},
            "suite": {"id": self.suite.id, "name": self.suite.name, "table_hash": self.suite.table_hash,
                      "image_size": self.suite.image_size, "generator": self.suite.generator,
                      "dataset": self.suite.dataset},
            "data": {"source": self.source_kind,
                     "path": None if cfg.data is None else "<in memory>" if isinstance(cfg.data, ArraySource)
                     else str(cfg.data),
                     "clean_path": str(cfg.clean_data) if cfg.clean_data else None, "n_images": self.n,
                     "limit": cfg.limit, "seed": cfg.seed, "class_order": self.data.class_order,
                     "storage_jpeg": (self.suite.jpeg_quality or 85) if self.storage_jpeg else None,
                     "rng_device": rng_device(dev) if self.source_kind == "generate" else None,
                     "fingerprint": self.data_fingerprint},
            "preprocess": self.preprocess.to_dict(),
            "protocol": {"corruptions": self.corruptions, "severities": self.severities, "clean": cfg.clean,
                         "complete": complete,
                         "calibration": {"confidence": "max softmax", "bin_size": 100, "reference_quirk": quirk,
                                         "ece_bins": 15},
                         "bootstrap": {"replicates": cfg.n_boot, "seed": cfg.seed, "level": 0.95,
                                       "calibration_replicates": min(cfg.n_boot, CALIBRATION_REPLICATES),
                                       "unit": "image (paired across cells)"}},
            "cells": cell_rows(outcomes, self.cells, quirk),
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


@contextlib.contextmanager
def _progress(enabled: bool, totals: Mapping[str, int], name: str):
    """A bar for the run and one per corruption (clean apart), on stderr, each with its own images/s.

    Every chunk of images goes through all its cells before the next chunk, so the cells advance
    together; the time between two updates is the cost of the cell just finished, so each bar's rate is
    that corruption's own throughput (the slow ones stand out), and the run's bar has the ETA.
    Yields ``advance(corruption, n_images)``.
    """
    with progress_bar(enabled) as prog:
        if prog is None:
            yield lambda group, n: None
            return
        t0 = last = time.perf_counter()
        run = prog.add_task(f"[bold]{name}", total=sum(totals.values()), info="")
        width = max(map(len, totals))
        bars = {g: prog.add_task(f"  {g:<{width}}", total=t, info="") for g, t in totals.items()}
        spent = dict.fromkeys(totals, 0.0)
        done = dict.fromkeys(totals, 0)

        def advance(group: str, n: int) -> None:
            nonlocal last
            now = time.perf_counter()
            spent[group] += now - last
            last = now
            done[group] += n
            prog.update(bars[group], advance=n, info=f"{done[group] / max(spent[group], 1e-9):,.0f} img/s")
            prog.update(run, advance=n, info=f"{sum(done.values()) / max(now - t0, 1e-9):,.0f} img/s")

        yield advance


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

