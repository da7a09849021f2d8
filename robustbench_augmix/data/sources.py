"""Clean image sources, read lazily: CIFAR-10/100 python pickles and ImageFolder trees."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class SourceImageError(ValueError):
    """A source image could not be read (truncated, corrupt, unsupported)."""


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


@dataclass
class CifarSource:
    """The test split of CIFAR-10 (``cifar-10-batches-py/test_batch``) or CIFAR-100
    (``cifar-100-python/test``), as torchvision lays them out. Images are uint8 (32, 32, 3)."""

    root: Path
    images: np.ndarray
    labels: np.ndarray
    dataset: str

    @classmethod
    def open(cls, path: str | Path, dataset: str) -> CifarSource:
        path = Path(path).expanduser()
        sub, fname, key = {
            "cifar10": ("cifar-10-batches-py", "test_batch", b"labels"),
            "cifar100": ("cifar-100-python", "test", b"fine_labels"),
        }[dataset]
        for cand in (path / sub / fname, path / fname):
            if cand.is_file():
                d = _load_pickle(cand)
                imgs = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                return cls(cand.parent, np.ascontiguousarray(imgs), np.asarray(d[key], dtype=np.int64), dataset)
        raise FileNotFoundError(
            f"no {dataset} test split under {path}: expected {path / sub / fname} (the python version of the "
            f"dataset, as torchvision downloads it). Point --data at the folder that holds {sub}/."
        )

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> np.ndarray:
        return self.images[i]

    def relpath(self, i: int) -> str:
        return f"{i:05d}"


@dataclass
class ImageFolderSource:
    """An ImageFolder tree ``root/<class>/<image>`` (ImageNet val in class folders, or any dataset).

    ``transform`` maps a PIL RGB image to the uint8 (H, W, 3) array the suite corrupts.
    """

    root: Path
    classes: list[str]
    files: list[tuple[str, int]]
    size: int
    resize_crop: bool

    @classmethod
    def open(cls, path: str | Path, size: int, resize_crop: bool) -> ImageFolderSource:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder; pass an ImageFolder tree root/<class>/<image>")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files = [
            (str(f.relative_to(root)), ci)
            for ci, c in enumerate(classes)
            for f in sorted((root / c).rglob("*"))
            if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS
        ]
        if not files:
            raise FileNotFoundError(f"no images under {root}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)})")
        return cls(root, classes, files, size, resize_crop)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c for _, c in self.files], dtype=np.int64)

    def relpath(self, i: int) -> str:
        return self.files[i][0]

    def read(self, i: int) -> np.ndarray:
        path = self.root / self.files[i][0]
        try:
            with Image.open(path) as im:
                im.load()
                im = im.convert("RGB")
        except Exception as e:  # PIL raises several types for broken files
            raise SourceImageError(f"{path}: cannot read image ({e})") from e
        return preprocess(im, self.size, self.resize_crop)


def preprocess(im: Image.Image, size: int, resize_crop: bool) -> np.ndarray:
    """ImageNet-C's ``Resize(256) + CenterCrop(224)`` (scaled for other sizes) when ``resize_crop``,
    else Tiny-ImageNet-C's ``Resize((size, size))``; PIL bilinear as torchvision used on PIL images."""
    if resize_crop:
        short = round(size * 256 / 224)
        w, h = im.size
        if w <= h:
            nw, nh = short, int(short * h / w)
        else:
            nh, nw = short, int(short * w / h)
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
    elif im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def open_source(path: str | Path, suite) -> CifarSource | ImageFolderSource:
    """The clean source for a suite: CIFAR pickles for the npy layout, an ImageFolder otherwise."""
    if suite.layout == "npy":
        return CifarSource.open(path, suite.meta["dataset"])
    return ImageFolderSource.open(path, suite.image_size, resize_crop=suite.id == "imagenet-c")
