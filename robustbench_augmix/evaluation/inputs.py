"""The images and labels an evaluation reads: the clean set, the pre-generated cells, and how labels
map to the model's outputs.

The class count and order come from the suite table's ``[dataset]`` (``Suite.num_classes``,
``Suite.classes``), or from the data's own class folders, or from the model's class names (a card's
``classes``): never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..corruptions.suites import Suite
from ..data.sources import (
    ArraySource,
    CifarSource,
    DatasetMissing,
    OfficialFolderSource,
    OfficialNpySource,
    fingerprint,
    open_source,
)
from .cache import EvaluationError


@dataclass
class EvalData:
    """``clean`` reads clean uint8 (H, W, 3) images (or None); ``official`` reads pre-generated cells (or
    None); ``labels`` are (N,) int64 indices of the model's outputs."""

    clean: object | None
    official: object | None
    labels: torch.Tensor
    n: int
    num_classes: int
    class_order: str

    def fingerprint(self) -> str:
        """What was read, as :func:`~robustbench_augmix.data.sources.fingerprint` of each source."""
        srcs = (("clean", self.clean), ("files", self.official))
        return ";".join(f"{k}={fingerprint(s)}" for k, s in srcs if s is not None)


def open_data(suite: Suite, *, source: str, data, clean_data, clean: bool, cells: Sequence[tuple[str, int]],
              corruptions: Sequence[str], severities: Sequence[int], limit: int | None,
              classes: Sequence[str] | None) -> EvalData:
    """Open what ``source`` (``generate`` / ``official``) needs and check the sets agree."""
    try:
        if source == "generate":
            clean_src = (CifarSource.open(None, suite.dataset) if data is None and suite.layout == "npy"
                         else _clean(data, suite))
            official = None
        else:
            if data is None:
                raise EvaluationError("--source official needs --data: the folder of the pre-generated suite")
            cls = OfficialNpySource if suite.layout == "npy" else OfficialFolderSource
            corr = [c for c, _ in cells if c != "clean"]
            official = cls(data, corr or list(corruptions), list(severities)) if corr else None
            clean_src = None
            if clean:
                if clean_data is None and suite.layout != "npy":
                    raise EvaluationError("the clean error needs the clean images: pass --clean-data "
                                          "(e.g. /datasets/imagenet/val), or --no-clean to skip it")
                try:
                    clean_src = (CifarSource.open(None, suite.dataset) if clean_data is None
                                 else _clean(clean_data, suite))
                except DatasetMissing as e:
                    raise EvaluationError(f"the clean error needs the clean test set: pass --clean-data DIR, "
                                          f"or --no-clean to skip it. ({e})") from None
    except DatasetMissing as e:
        raise EvaluationError(str(e)) from None
    srcs = [s for s in (clean_src, official) if s is not None]
    # --limit N takes the first N of each: files written with rb-corrupt --limit N score against the first
    # N clean images.
    sizes = {len(s) if limit is None else min(limit, len(s)) for s in srcs}
    if len(sizes) != 1:
        hint = (f"; if the files were written with rb-corrupt --limit {len(official)}, pass --limit "
                f"{len(official)}" if len(official) < len(clean_src) else "")
        raise EvaluationError(f"the clean set has {len(clean_src)} images but the corrupted set "
                              f"{len(official)}; they must be the same test set{hint}")
    n = sizes.pop()
    labels = [np.asarray(s.labels)[:n] for s in srcs]
    if len(labels) == 2 and not np.array_equal(labels[0], labels[1]):
        raise EvaluationError("the clean and corrupted sets have different labels; they must be the same "
                              "test set in the same order")
    out = EvalData(clean_src, official, torch.as_tensor(labels[0]), n,
                   suite.num_classes, "folder names, sorted")
    first = srcs[0]
    # The data's own class list where it has one (ImageFolder folders, named in-memory classes); else the
    # suite table's: labels are then indices into the dataset's classes, in its order.
    if getattr(first, "classes", None):
        out.num_classes = len(first.classes)
    else:
        out.class_order = f"{suite.dataset} label order"
    if classes is not None and suite.layout != "npy":
        map_classes(out, list(first.classes or []), list(classes))
    return out


def map_classes(d: EvalData, folders: list[str], model_classes: list[str]) -> None:
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
    d.labels = lut[d.labels]
    d.num_classes = len(model_classes)
    d.class_order = f"by name into the model's {len(model_classes)} classes ({len(folders)} present)"


def _clean(path, suite: Suite):
    if isinstance(path, ArraySource):
        return path
    if path is None:
        raise EvaluationError(f"--data is required for {suite.id}: the clean images as an ImageFolder tree")
    return open_source(path, suite)


# ---------------------------------------------------------------------------------- batches
class _Items(torch.utils.data.Dataset):
    def __init__(self, read: Callable[[int], np.ndarray], idx: list[int]) -> None:
        self.read, self.idx = read, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, k: int):
        i = self.idx[k]
        return torch.from_numpy(np.array(self.read(i), dtype=np.uint8, copy=True)), i


class CellReader:
    """``read(i)`` of one pre-generated (corruption, severity) cell."""

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


def batches(read: Callable[[int], np.ndarray], idx: Sequence[int], batch_size: int, workers: int):
    """uint8 ``(B, H, W, 3)`` images and their ``(B,)`` indices, in order."""
    return torch.utils.data.DataLoader(_Items(read, list(idx)), batch_size=batch_size, shuffle=False,
                                       num_workers=workers, collate_fn=_collate)
