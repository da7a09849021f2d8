"""Write a corrupted suite in the official on-disk layouts, resumably and shardably.

- ``npy`` (CIFAR-10-C / CIFAR-100-C): ``<corruption>.npy`` uint8 ``(S * N, 32, 32, 3)``, severity-major,
  and ``labels.npy``. One work unit = one corruption.
- ``imagefolder`` (ImageNet-C / Tiny-ImageNet-C): ``<corruption>/<severity>/<class>/<file>.JPEG``,
  saved by PIL at quality 85 with ``optimize=True`` as the reference did. One unit = one
  (corruption, severity); inside it, each file is written once.

Every file is written under a temporary name and renamed, so a file under its final name is always
complete. Before a file is written its name goes into this shard's journal (``.rba/*.written-<k>of<n>``),
so a rerun knows which files in ``--out`` are this run's: only those are resumed (kept) or replaced; any
other file in ``--out`` (a real CIFAR-10-C folder, an unrelated image) makes the run stop with the list,
unless ``allow_existing`` lets it write there (then a file at one of its paths is replaced, never
adopted). A finished unit records its files' sha256 in ``.rba/``; ``manifest.json`` is written when
every unit is done, listing any skipped source images. Shards (``shard=(i, n)``) split the units (npy) or
the images (imagefolder) and produce the same files as one process, since every image's randomness is
keyed on its index; each shard marks its part of a unit done, so the last one to finish completes it.
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

from ._common import (
    InputError,
    RBAError,
    atomic_write,
    describe_difference,
    inside,
    json_dump,
    save_npy,
    sha256_file,
    versions,
)
from .corruptions import apply, check_corruption, image_seeds, load_suite, rng_device
from .data.sources import SourceImageError, fingerprint, open_source

STATE_DIR = ".rba"


class RunConfigMismatch(RBAError, ValueError):
    """``--out`` holds files of a different run."""


class ForeignFiles(RBAError, ValueError):
    """``--out`` holds files that no run of this generator wrote."""


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
    allow_existing: bool = False  # write into an --out that holds other files (replacing any at our paths)
    skipped: list[str] = field(default_factory=list)


class Generator:
    """Runs a :class:`Plan`; ``progress(n_images)`` is called as images are finished."""

    def __init__(self, plan: Plan, progress: Callable[[int], None] | None = None) -> None:
        self.plan = plan
        self.suite = self._load_suite(plan.suite)
        self._check_units(plan.corruptions)
        self.source = open_source(plan.data, self.suite)
        self.out = Path(plan.out).expanduser()
        self.progress = progress or (lambda n: None)
        self.n = len(self.source) if plan.limit is None else min(plan.limit, len(self.source))
        root = getattr(self.source, "root", None)
        if root is not None and self.suite.layout == "imagefolder" and inside(self.out, root):
            raise InputError(f"--out {self.out} is inside --data {root}: the images written there would be read as "
                             "source images by the next run (and resuming would be impossible); write elsewhere")
        self.source_fingerprint = fingerprint(self.source)
        self._skipped_rel: dict[tuple, list[str]] = {}
        if self.suite.layout == "imagefolder":
            self._check_collisions()

    def _load_suite(self, suite_id: str):
        return load_suite(suite_id)

    def _check_units(self, names: Sequence[str]) -> None:
        for c in names:
            check_corruption(c, self.suite)

    # ---------------------------------------------------------------- run identity and resumption
    def config(self) -> dict:
        p = self.plan
        return {"suite": self.suite.id, "table_hash": self.suite.table_hash, "seed": p.seed,
                "severities": list(p.severities), "layout": self.suite.layout, "images": self.n,
                "jpeg_quality": self.suite.jpeg_quality, "rng_device": rng_device(p.device),
                "source_fingerprint": self.source_fingerprint}

    def _check_config(self) -> None:
        path = self.out / STATE_DIR / "run.json"
        cfg = self.config()
        if path.exists():
            old = json.loads(path.read_text())
            if old != cfg and not self._anything_written():
                old = cfg  # a run that stopped before writing any file leaves nothing to protect
                json_dump(path, cfg)
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

    def _check_collisions(self) -> None:
        """Every source image gets its own output file: ``x.png`` and ``x.jpg`` in one class would both become
        ``x.JPEG``, and one would be lost. Refused before anything is written, naming the pairs."""
        seen: dict[str, str] = {}
        clash = []
        for i in range(self.n):
            rel = Path(self.source.relpath(i))
            key = str(rel.parent / (rel.stem + ".JPEG"))
            if key in seen:
                clash.append(f"{seen[key]} and {rel}")
            seen.setdefault(key, str(rel))
        if clash:
            raise InputError(f"{len(clash)} pair(s) of source images would be written to the same file (the "
                             f"layout names every output <stem>.JPEG): {'; '.join(clash[:5])}"
                             f"{' ...' if len(clash) > 5 else ''}. Rename one of each pair in --data")

    # ---------------------------------------------------------------- which files are ours
    def _journal(self, unit) -> Path:
        c, s = unit
        k, n = self.plan.shard
        return self.out / STATE_DIR / f"{'npy' if s is None else f'{c}-{s}'}.written-{k}of{n}"

    def _ours(self, unit) -> set[str]:
        """Relative paths this generator wrote (or was about to write) for ``unit``, by any shard."""
        c, s = unit
        state = self.out / STATE_DIR
        stem = "npy" if s is None else f"{c}-{s}"
        names: set[str] = set()
        for j in state.glob(f"{stem}.written-*"):
            names.update(line for line in j.read_text().splitlines() if line)
        marker = self._done_path(unit)
        if marker.exists():
            names.update(json.loads(marker.read_text()))
        return names

    def _journal_paths(self, unit, paths: Sequence[Path]) -> None:
        """Record ``paths`` as this run's in ``unit``'s journal, before they are written (one append per batch)."""
        journal = self._journal(unit)
        journal.parent.mkdir(parents=True, exist_ok=True)
        with open(journal, "a") as f:
            f.write("".join(f"{p.relative_to(self.out)}\n" for p in paths))

    def _write(self, unit, path: Path, write: Callable[[Path], None]) -> None:
        """Journal ``path`` for ``unit``, then write it atomically."""
        self._journal_paths(unit, [path])
        atomic_write(path, write)

    def _anything_written(self) -> bool:
        state = self.out / STATE_DIR
        return any(state.glob("*.written-*")) or any(p.name != "run.json" for p in state.glob("*.json"))

    @staticmethod
    def _leftover(p: Path) -> bool:
        return p.name.startswith(".") and p.name.endswith(".part")  # a temporary file of a killed write

    def _refuse(self, foreign: list[str]) -> None:
        if foreign and not self.plan.allow_existing:
            shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
            raise ForeignFiles(
                f"{self.out} holds {len(foreign)} file(s) that this run did not write ({shown}); rb-corrupt never "
                "overwrites or adopts them. Choose an empty or new --out, or pass --allow-existing to write there "
                "anyway (files at the paths this run writes are then replaced)")

    def _check_foreign(self, folder: Path, ours: set[str]) -> None:
        """Refuse files under ``folder`` (``.rba`` and ``.part`` leftovers aside) that are not ``ours``."""
        if folder.exists():
            self._refuse([str(p.relative_to(self.out)) for p in sorted(folder.rglob("*"))
                          if p.is_file() and p.relative_to(self.out).parts[0] != STATE_DIR and not self._leftover(p)
                          and str(p.relative_to(self.out)) not in ours])

    def _check_top_level(self) -> None:
        """npy: every file in --out must be this generator's. ImageFolder: every top-level entry must be a
        corruption folder of this plan (their files are checked unit by unit), ``.rba`` or our manifest."""
        own_manifest = {"manifest.json"} if (self.out / STATE_DIR / "run.json").exists() else set()
        if self.suite.layout == "npy":
            ours = set().union(*(self._ours((c, None)) for c in ["", *self.plan.corruptions])) | own_manifest
            self._check_foreign(self.out, ours)
            return
        allowed = set(self.plan.corruptions) | {STATE_DIR} | own_manifest
        foreign: list[str] = []
        for p in sorted(self.out.iterdir()):
            if p.name in allowed or self._leftover(p):
                continue
            files = [p] if not p.is_dir() else sorted(q for q in p.rglob("*") if q.is_file())
            foreign += [str(q.relative_to(self.out)) for q in files] or [f"{p.name}/"]
        self._refuse(foreign)

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
        self._write((c, None), target, lambda p: save_npy(p, arr))
        return {target.name: sha256_file(target)}

    def _write_labels(self) -> None:
        target = self.out / "labels.npy"
        labels = np.tile(self.source.labels[: self.n], len(self.plan.severities)).astype(np.uint8)
        if not (target.exists() and target.name in self._ours(("", None))):
            self._write(("", None), target, lambda p: save_npy(p, labels))

    def _jpeg_path(self, c: str, s: int, i: int) -> Path:
        rel = Path(self.source.relpath(i))
        return self.out / c / str(s) / rel.parent / (rel.stem + ".JPEG")

    def _run_folder_unit(self, c: str, s: int) -> dict[str, str]:
        q = self.suite.jpeg_quality or 85
        k, nsh = self.plan.shard
        mine = [i for i in range(self.n) if i % nsh == k]
        unit_dir = self.out / c / str(s)
        # Every class folder of the source in every cell, images or not (the released ImageNet-C has all
        # 1,000): readers that map folders to labels (RobustBench's load_imagenetc, ours) rely on it.
        for cls in self.source.classes:
            (unit_dir / cls).mkdir(parents=True, exist_ok=True)
        listed = {str(p.relative_to(self.out)) for p in unit_dir.rglob("*") if p.is_file()} if unit_dir.exists() \
            else set()  # listed before the journals are read: a file another shard adds now is journaled first
        ours = self._ours((c, s))
        # the listing above, checked (not a second walk of the unit's folder)
        self._refuse(sorted(r for r in listed if r not in ours and not self._leftover(Path(r))))
        done = listed & ours
        todo = [i for i in mine if str(self._jpeg_path(c, s, i).relative_to(self.out)) not in done]
        self.progress(len(mine) - len(todo))
        bs = self.plan.batch_size
        for a in range(0, len(todo), bs):
            ok, imgs = self._read_batch(todo[a : a + bs])
            if ok:
                out = self._corrupt(imgs, ok, c, s)
                self._journal_paths((c, s), [self._jpeg_path(c, s, i) for i in ok])
                for i, im in zip(ok, out, strict=True):
                    atomic_write(self._jpeg_path(c, s, i),
                                 lambda p, im=im: Image.fromarray(im).save(p, "JPEG", quality=q, optimize=True))
            skipped = [i for i in todo[a : a + bs] if i not in ok]
            self._skipped_rel.setdefault((c, s), []).extend(self.source.relpath(i) for i in skipped)
            self.progress(len(todo[a : a + bs]))
        # This shard's part is done (with what it had to skip); the last shard to finish completes the unit.
        state = self.out / STATE_DIR
        json_dump(state / f"{c}-{s}.part-{k}of{nsh}.json", {"skipped": sorted(self._skipped_rel.get((c, s), []))})
        parts = [state / f"{c}-{s}.part-{j}of{nsh}.json" for j in range(nsh)]
        if not all(p.exists() for p in parts):
            return {}  # other shards still owe files of this unit
        skipped = sorted({r for p in parts for r in json.loads(p.read_text())["skipped"]})
        if skipped:
            json_dump(state / f"{c}-{s}.skipped.json", skipped)
        ours = self._ours((c, s))
        files = {}
        for i in range(self.n):
            p = self._jpeg_path(c, s, i)
            rel = str(p.relative_to(self.out))
            if p.exists() and rel in ours:
                files[rel] = sha256_file(p)
        return files

    def space_needed(self) -> int:
        """Bytes the whole run writes: exact for npy; for JPEG trees, the mean size of the files already
        written (else 40 % of the raw pixels, q85 JPEG of photographs being well under that) times the count."""
        sev = len(self.plan.severities)
        if self.suite.layout == "npy":
            return len(self.plan.corruptions) * (sev * self.n * 32 * 32 * 3 + 128) + sev * self.n + 128
        written = [p.stat().st_size for p in self.out.rglob("*.JPEG")][:1000] if self.out.exists() else []
        each = sum(written) / len(written) if written else 0.4 * self.suite.image_size ** 2 * 3
        return int(each * self.n * sev * len(self.plan.corruptions))

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
        self._check_top_level()
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
        skipped = {f"{c}/{s}": json.loads(p.read_text()) for c, s in self.units()
                   if (p := self.out / STATE_DIR / f"{c}-{s}.skipped.json").exists()}
        if (self.out / "labels.npy").exists():
            files["labels.npy"] = sha256_file(self.out / "labels.npy")
        classes = {"classes": list(self.source.classes)} if self.suite.layout == "imagefolder" else {}
        manifest = {"schema": 1, **self.config(), "corruptions": list(self.plan.corruptions), **classes,
                    "generator": self.suite.generator, "source": str(Path(self.plan.data).expanduser()),
                    "versions": versions(), "files": dict(sorted(files.items())), "skipped": skipped}
        path = self.out / "manifest.json"
        json_dump(path, manifest)
        return path


# ---------------------------------------------------------------------------------------------- -P
class SequenceGenerator(Generator):
    """A -P suite in its released CIFAR layout: ``<perturbation>.npy`` uint8 ``(N, frames, 32, 32, 3)``, the
    noise sequences also at difficulties 2 and 3 as ``<perturbation>_<d>.npy``; no labels file (the release
    has none: sequence k is test image k). One work unit = one file, written batch by batch into a memory
    map under its temporary name, then renamed. ``Plan.corruptions`` holds the file stems (``"rotate"``,
    ``"gaussian_noise_2"``); ``PSuite.release_stems`` lists a suite's."""

    def _load_suite(self, suite_id: str):
        from .perturbations import load_psuite

        suite = load_psuite(suite_id)
        if suite.layout != "npy":
            raise InputError(f"rb-corrupt writes {suite.name} ({suite.layout} layout) not yet: only the CIFAR-P .npy "
                             "layout")
        return suite

    def _check_units(self, stems: Sequence[str]) -> None:
        from .perturbations import check_perturbation

        for stem in stems:
            check_perturbation(self.suite.split_stem(stem)[0], self.suite)

    def config(self) -> dict:
        p = self.plan
        return {"suite": self.suite.id, "table_hash": self.suite.table_hash, "seed": p.seed, "layout": "npy",
                "images": self.n, "rng_device": rng_device(p.device), "source_fingerprint": self.source_fingerprint}

    def _run_npy_unit(self, stem: str) -> dict[str, str]:
        from .perturbations import perturb

        name, d = self.suite.split_stem(stem)
        frames, size, n, bs = self.suite.perturbations[name].frames, self.suite.image_size, self.n, self.plan.batch_size
        target = self.out / f"{stem}.npy"

        def write(path: Path) -> None:
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, frames, size, size, 3))
            for a in range(0, n, bs):
                idx = list(range(a, min(a + bs, n)))
                x = torch.from_numpy(self.source.images[idx]).to(self.plan.device).permute(0, 3, 1, 2)
                v = perturb(x, name, suite=self.suite.id, difficulty=d, seed=self.plan.seed, index=idx)
                arr[a: idx[-1] + 1] = v.permute(0, 1, 3, 4, 2).cpu().numpy()
                self.progress(len(idx))
            arr.flush()
            del arr

        self._write((stem, None), target, write)
        return {target.name: sha256_file(target)}

    def _write_labels(self) -> None:
        pass  # the released CIFAR-P has no labels file

    def space_needed(self) -> int:
        frames = [self.suite.perturbations[self.suite.split_stem(stem)[0]].frames for stem in self.plan.corruptions]
        return sum(f * self.n * self.suite.image_size ** 2 * 3 + 128 for f in frames)

    def total_images(self) -> int:
        units = [u for i, u in enumerate(self.units()) if i % self.plan.shard[1] == self.plan.shard[0]]
        return len(units) * self.n
