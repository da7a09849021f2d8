"""Write a corrupted suite in the official on-disk layouts, resumably and shardably.

- ``npy`` (CIFAR-10-C / CIFAR-100-C): ``<corruption>.npy`` uint8 ``(S * N, 32, 32, 3)``, severity-major,
  and ``labels.npy``. One work unit = one corruption.
- ``imagefolder`` (ImageNet-C / Tiny-ImageNet-C): ``<corruption>/<severity>/<class>/<file>.JPEG``,
  saved by PIL at quality 85 with ``optimize=True`` as the reference did. One unit = one
  (corruption, severity); inside it, each file is written once.

Every file is written under a temporary name and renamed, so a file under its final name is always
complete. A finished unit records its files' sha256 in ``.rba/``; ``manifest.json`` is written when
every unit is done. Shards (``shard=(i, n)``) split the units (npy) or the images (imagefolder) and
produce the same files as one process, since every image's randomness is keyed on its index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._common import RBAError, atomic_write, describe_difference, json_dump, save_npy, sha256_file, versions
from .corruptions import apply, check_corruption, image_seeds, load_suite, rng_device
from .data.sources import SourceImageError, open_source

STATE_DIR = ".rba"


class RunConfigMismatch(RBAError, ValueError):
    """``--out`` holds files of a different run."""


@dataclass
class Plan:
    suite: str
    data: str
    out: str
    corruptions: Sequence[str]
    severities: Sequence[int] = (1, 2, 3, 4, 5)
    seed: int = 0
    batch_size: int = 128
    device: str = "cpu"
    shard: tuple[int, int] = (0, 1)
    on_error: str = "fail"  # or "skip"
    limit: int | None = None
    skipped: list[str] = field(default_factory=list)


class Generator:
    """Runs a :class:`Plan`; ``progress(n_images)`` is called as images are finished."""

    def __init__(self, plan: Plan, progress: Callable[[int], None] | None = None) -> None:
        self.plan = plan
        self.suite = load_suite(plan.suite)
        self.source = open_source(plan.data, self.suite)
        self.out = Path(plan.out).expanduser()
        self.progress = progress or (lambda n: None)
        for c in plan.corruptions:
            check_corruption(c, self.suite)
        self.n = len(self.source) if plan.limit is None else min(plan.limit, len(self.source))

    # ---------------------------------------------------------------- run identity and resumption
    def config(self) -> dict:
        p = self.plan
        return {"suite": self.suite.id, "table_hash": self.suite.table_hash, "seed": p.seed,
                "severities": list(p.severities), "layout": self.suite.layout, "images": self.n,
                "jpeg_quality": self.suite.jpeg_quality, "rng_device": rng_device(p.device)}

    def _check_config(self) -> None:
        path = self.out / STATE_DIR / "run.json"
        cfg = self.config()
        if path.exists():
            old = json.loads(path.read_text())
            if old != cfg:
                diff, shown = describe_difference(old, cfg)
                hint = (" The random fields were drawn on another device, whose random stream differs: resume on"
                        " that device (--device)." if "rng_device" in diff else "")
                raise RunConfigMismatch(
                    f"{self.out} holds files from a different run ({shown}).{hint} Use another --out, or delete "
                    "that folder to start over"
                )
        else:
            json_dump(path, cfg)

    def units(self) -> list[tuple[str, int | None]]:
        if self.suite.layout == "npy":
            return [(c, None) for c in self.plan.corruptions]
        return [(c, s) for c in self.plan.corruptions for s in self.plan.severities]

    def _done_path(self, unit) -> Path:
        c, s = unit
        return self.out / STATE_DIR / (f"{c}.json" if s is None else f"{c}-{s}.json")

    # ---------------------------------------------------------------- batches
    def _read_batch(self, idx: Sequence[int]) -> tuple[list[int], np.ndarray]:
        ok, imgs = [], []
        for i in idx:
            try:
                imgs.append(self.source.read(i))
                ok.append(i)
            except SourceImageError as e:
                if self.plan.on_error == "fail":
                    raise
                if str(e) not in self.plan.skipped:
                    self.plan.skipped.append(str(e))
        return ok, (np.stack(imgs) if imgs else np.zeros((0, 1, 1, 3), np.uint8))

    def _corrupt(self, imgs: np.ndarray, idx: Sequence[int], c: str, s: int) -> np.ndarray:
        x = torch.from_numpy(imgs).to(self.plan.device).permute(0, 3, 1, 2)
        seeds = image_seeds(self.plan.seed, self.suite.id, c, s, idx)
        y = apply(x, c, s, suite=self.suite.id, seeds=seeds, levels=True)
        return y.permute(0, 2, 3, 1).cpu().numpy()

    # ---------------------------------------------------------------- layouts
    def _run_npy_unit(self, c: str) -> dict[str, str]:
        target = self.out / f"{c}.npy"
        n, sevs = self.n, list(self.plan.severities)
        arr = np.empty((len(sevs) * n, 32, 32, 3), dtype=np.uint8)
        bs = self.plan.batch_size
        for si, s in enumerate(sevs):
            for a in range(0, n, bs):
                idx = list(range(a, min(a + bs, n)))
                arr[si * n + a : si * n + idx[-1] + 1] = self._corrupt(self.source.images[idx], idx, c, s)
                self.progress(len(idx))
        atomic_write(target, lambda p: save_npy(p, arr))
        return {target.name: sha256_file(target)}

    def _write_labels(self) -> None:
        target = self.out / "labels.npy"
        labels = np.tile(self.source.labels[: self.n], len(self.plan.severities)).astype(np.uint8)
        if not target.exists():
            atomic_write(target, lambda p: save_npy(p, labels))

    def _jpeg_path(self, c: str, s: int, i: int) -> Path:
        rel = Path(self.source.relpath(i))
        return self.out / c / str(s) / rel.parent / (rel.stem + ".JPEG")

    def _run_folder_unit(self, c: str, s: int) -> dict[str, str]:
        q = self.suite.jpeg_quality or 85
        k, nsh = self.plan.shard
        mine = [i for i in range(self.n) if i % nsh == k]
        todo = [i for i in mine if not self._jpeg_path(c, s, i).exists()]
        self.progress(len(mine) - len(todo))
        bs = self.plan.batch_size
        for a in range(0, len(todo), bs):
            ok, imgs = self._read_batch(todo[a : a + bs])
            if ok:
                out = self._corrupt(imgs, ok, c, s)
                for i, im in zip(ok, out, strict=True):
                    atomic_write(self._jpeg_path(c, s, i),
                                 lambda p, im=im: Image.fromarray(im).save(p, "JPEG", quality=q, optimize=True))
            self.progress(len(todo[a : a + bs]))
        if nsh > 1 and not all(self._jpeg_path(c, s, i).exists() for i in range(self.n) if i % nsh != k):
            return {}  # other shards still owe files of this unit
        files = {}
        for i in range(self.n):
            p = self._jpeg_path(c, s, i)
            if p.exists():
                files[str(p.relative_to(self.out))] = sha256_file(p)
        return files

    # ---------------------------------------------------------------- driver
    def total_images(self) -> int:
        per = self.n if self.suite.layout == "npy" else len(range(self.plan.shard[0], self.n, self.plan.shard[1]))
        units = self.units()
        if self.suite.layout == "npy":
            units = [u for i, u in enumerate(units) if i % self.plan.shard[1] == self.plan.shard[0]]
            return len(units) * per * len(self.plan.severities)
        return len(units) * per

    def run(self) -> dict:
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_config()
        k, nsh = self.plan.shard
        done = skipped_units = 0
        for ui, unit in enumerate(self.units()):
            c, s = unit
            marker = self._done_path(unit)
            if self.suite.layout == "npy" and ui % nsh != k:
                continue
            if marker.exists():
                skipped_units += 1
                self.progress(self.n * (len(self.plan.severities) if s is None else 1)
                              // (1 if self.suite.layout == "npy" else nsh))
                continue
            files = self._run_npy_unit(c) if s is None else self._run_folder_unit(c, s)
            if files:
                json_dump(marker, files)
            done += 1
        if self.suite.layout == "npy":
            self._write_labels()
        manifest = self._maybe_manifest()
        return {"units_run": done, "units_already_done": skipped_units, "seconds": time.perf_counter() - t0,
                "skipped_images": list(self.plan.skipped), "manifest": str(manifest) if manifest else None}

    def _maybe_manifest(self) -> Path | None:
        markers = [self._done_path(u) for u in self.units()]
        if not all(m.exists() for m in markers):
            return None
        files: dict[str, str] = {}
        for m in markers:
            files.update(json.loads(m.read_text()))
        if (self.out / "labels.npy").exists():
            files["labels.npy"] = sha256_file(self.out / "labels.npy")
        manifest = {"schema": 1, **self.config(), "corruptions": list(self.plan.corruptions),
                    "generator": self.suite.generator, "source": str(Path(self.plan.data).expanduser()),
                    "versions": versions(), "files": dict(sorted(files.items()))}
        path = self.out / "manifest.json"
        json_dump(path, manifest)
        return path
