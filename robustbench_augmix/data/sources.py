"""Clean image sources, read lazily: CIFAR-10/100 python pickles and ImageFolder trees."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .._common import InputError, RBAError, cache_dir

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class SourceImageError(RBAError, ValueError):
    """A source image could not be read (truncated, corrupt, unsupported)."""


class DatasetMissing(RBAError, FileNotFoundError):
    """A dataset is not where it was looked for (and could not be downloaded)."""


# The archives torchvision's CIFAR10/CIFAR100 datasets download, with the md5 sums torchvision checks
# (torchvision/datasets/cifar.py); the extracted layout is the same as torchvision's.
CIFAR = {
    "cifar10": {"url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "md5": "c58f30108f718f92721af3b95e74349a", "sub": "cifar-10-batches-py", "file": "test_batch",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "key": b"labels"},
    "cifar100": {"url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "md5": "eb9058c3a382ffc7106e4002c42a8d85", "sub": "cifar-100-python", "file": "test",
                 "train": ["train"], "key": b"fine_labels"},
}


def download_cifar(dataset: str, root: Path) -> None:
    """Fetch and extract the CIFAR archive into ``root`` unless its test split is already there."""
    info = CIFAR[dataset]
    if (root / info["sub"] / info["file"]).is_file():
        return
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(info["url"], str(root), md5=info["md5"])
    except Exception as e:  # offline, proxy, checksum: all end the same way for the user
        raise DatasetMissing(
            f"{dataset} is not in {root} and could not be downloaded from {info['url']} ({type(e).__name__}: {e}). "
            f"Pass --data with the folder that holds {info['sub']}/ (torchvision's layout), or put "
            f"{info['url'].rsplit('/', 1)[1]} (md5 {info['md5']}) into {root} and run again."
        ) from e


def _content_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return "sha256:" + h.hexdigest()[:32]


def _listing_digest(root: Path, relpaths) -> str:
    """sha256 over (path, size, mtime) of each file: a retouched, replaced, added or removed file changes it."""
    h = hashlib.sha256()
    for rel in relpaths:
        st = (root / rel).stat()
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return "files:" + h.hexdigest()[:32]


def fingerprint(src) -> str:
    """The identity of a data source as read, for run identities (rb-eval's cache, rb-corrupt's run):
    a content hash of what is in memory (CIFAR batches, arrays: ~30 MB, about 30 ms), and (path, size,
    mtime) of every file for image trees and official files (one stat per file; hashing 6 GB of JPEGs
    would take minutes). A copy made without keeping mtimes (``cp`` without ``-p``) therefore reads as
    other data: the refusal says so."""
    return src.fingerprint()


class UnsafePickle(RBAError, ValueError):
    """A CIFAR file holds something other than the format's plain data."""


class _CifarUnpickler(pickle.Unpickler):
    """The CIFAR python pickles hold only dicts, lists, bytes, strings, numbers and NumPy arrays: the
    unpickler resolves exactly the globals that rebuild a NumPy array (and ``_codecs.encode``, which
    protocol-2 pickles of bytes call) and refuses every other one, so a poisoned file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickle(f"{module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    """A CIFAR batch file, read with :class:`_CifarUnpickler`."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except UnsafePickle as e:
        raise UnsafePickle(f"{path} is not a CIFAR batch file: it asks to run {e} when loaded, which the CIFAR "
                           "format never needs; it was refused unread. Replace it with the original file "
                           "(torchvision's archive, md5-checked)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetMissing(f"{path} is not a readable CIFAR batch file ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d:
        raise DatasetMissing(f"{path} is not a CIFAR batch file (no b'data' entry)")
    return d


def write_cifar(root: Path, images: np.ndarray, labels, dataset: str = "cifar10", *, split: str = "test",
                batch_label: bytes = b"test") -> Path:
    """Write uint8 (N, 32, 32, 3) images as a CIFAR split in torchvision's python-pickle layout (the format
    :meth:`CifarSource.open` reads; the test split, or the single training file of ``split="train"``)."""
    info = CIFAR[dataset]
    d = Path(root) / info["sub"]
    d.mkdir(parents=True, exist_ok=True)
    data = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    name = info["file"] if split == "test" else info["train"][0]
    with open(d / name, "wb") as f:
        pickle.dump({b"data": data, info["key"]: [int(v) for v in labels], b"batch_label": batch_label}, f)
    return Path(root)


@dataclass
class CifarSource:
    """The test split of CIFAR-10 (``cifar-10-batches-py/test_batch``) or CIFAR-100
    (``cifar-100-python/test``), as torchvision lays them out. Images are uint8 (32, 32, 3)."""

    root: Path
    images: np.ndarray
    labels: np.ndarray
    dataset: str

    @classmethod
    def open(cls, path: str | Path | None, dataset: str, download: bool = True, split: str = "test") -> CifarSource:
        """Open the ``test`` (or ``train``) split under ``path``; with ``path=None``, under the user cache,
        downloading it there (checksummed) on first use."""
        if path is None:
            path = cache_dir("data")
            if download:
                download_cifar(dataset, path)
        path = Path(path).expanduser()
        info = CIFAR[dataset]
        sub, key = info["sub"], info["key"]
        names = [info["file"]] if split == "test" else info["train"]
        for folder in (path / sub, path):
            if all((folder / n).is_file() for n in names):
                parts = [_load_pickle(folder / n) for n in names]
                data = np.concatenate([np.asarray(d[b"data"], dtype=np.uint8) for d in parts])
                imgs = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                labels = np.concatenate([np.asarray(d[key], dtype=np.int64) for d in parts])
                return cls(folder, np.ascontiguousarray(imgs), labels, dataset)
        raise DatasetMissing(
            f"no {dataset} {split} split under {path}: expected {', '.join(str(path / sub / n) for n in names)} "
            f"(the python version of the dataset, as torchvision downloads it). Point --data at the folder that "
            f"holds {sub}/."
        )

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> np.ndarray:
        return self.images[i]

    def relpath(self, i: int) -> str:
        return f"{i:05d}"

    def fingerprint(self) -> str:
        return _content_digest(self.images, self.labels)


@dataclass
class ArraySource:
    """Images already in memory: uint8 ``(N, H, W, 3)`` and ``(N,)`` labels (``evaluate(model, data=...)``)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise InputError(f"ArraySource images must be uint8 (N, H, W, 3), got {self.images.dtype} "
                             f"{self.images.shape}")
        if len(self.labels) != len(self.images):
            raise InputError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> np.ndarray:
        return self.images[i]

    def fingerprint(self) -> str:
        return _content_digest(self.images, self.labels)


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
            raise DatasetMissing(f"--data {root} is not a folder; pass an ImageFolder tree root/<class>/<image>")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files = [
            (str(f.relative_to(root)), ci)
            for ci, c in enumerate(classes)
            for f in sorted((root / c).rglob("*"))
            if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS
        ]
        if not files:
            raise DatasetMissing(f"no images under {root}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)})")
        return cls(root, classes, files, size, resize_crop)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c for _, c in self.files], dtype=np.int64)

    def relpath(self, i: int) -> str:
        return self.files[i][0]

    def fingerprint(self) -> str:
        return _listing_digest(self.root, [f for f, _ in self.files])

    def read(self, i: int) -> np.ndarray:
        path = self.root / self.files[i][0]
        try:
            with Image.open(path) as im:
                im.load()
                im = im.convert("RGB")
        except Exception as e:  # PIL raises several types for broken files
            raise SourceImageError(f"{path}: cannot read image ({e})") from e
        return fit_to_suite(im, self.size, self.resize_crop)


def fit_to_suite(im: Image.Image, size: int, resize_crop: bool) -> np.ndarray:
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
        return CifarSource.open(path, suite.dataset)
    return ImageFolderSource.open(path, suite.image_size, resize_crop=suite.id == "imagenet-c")


# ------------------------------------------------------------------------------ official -C sets
class OfficialNpySource:
    """A CIFAR-10-C / CIFAR-100-C folder: ``<corruption>.npy`` uint8 ``(S*N, 32, 32, 3)``, severity-major,
    and ``labels.npy``; memory-mapped, so only the images asked for are read. Severities are 1..5 unless
    a ``manifest.json`` written by ``rb-corrupt`` names a subset."""

    def __init__(self, root: str | Path, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        self.root = Path(root).expanduser()
        if not (self.root / "labels.npy").is_file():
            raise DatasetMissing(f"{self.root} has no labels.npy; --source official needs a CIFAR-10-C style "
                                 "folder (<corruption>.npy + labels.npy), e.g. one written by rb-corrupt")
        manifest = self.root / "manifest.json"
        self.file_severities = (list(json.loads(manifest.read_text())["severities"]) if manifest.is_file()
                                else [1, 2, 3, 4, 5])
        missing = [f"{c}.npy" for c in corruptions if not (self.root / f"{c}.npy").is_file()]
        absent = [s for s in severities if s not in self.file_severities]
        if missing or absent:
            raise DatasetMissing(
                f"{self.root} lacks {', '.join(missing) or ''}{' and ' if missing and absent else ''}"
                f"{'severities ' + str(absent) if absent else ''}; generate them with rb-corrupt, or leave them "
                "out with --corruptions/--severities")
        all_labels = np.load(self.root / "labels.npy")
        k = len(self.file_severities)
        if all_labels.ndim != 1 or all_labels.dtype.kind not in "ui" or len(all_labels) % k:
            raise DatasetMissing(f"{self.root / 'labels.npy'} holds {all_labels.dtype} {all_labels.shape}; the "
                                 f"released form is integer labels of shape ({k} * N,), one per image of every "
                                 "severity")
        self.n = len(all_labels) // k
        self.labels = np.asarray(all_labels[: self.n], dtype=np.int64)
        self._arrays: dict[str, np.ndarray] = {}
        self._names = ["labels.npy", *(f"{c}.npy" for c in corruptions)]

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> str:
        return _listing_digest(self.root, self._names)

    def read(self, corruption: str, severity: int, i: int) -> np.ndarray:
        arr = self._arrays.get(corruption)
        if arr is None:
            arr = np.load(self.root / f"{corruption}.npy", mmap_mode="r")
            want = (self.n * len(self.file_severities), 32, 32, 3)
            # Exactly the released form: a float or int16 array cast to uint8 would score other images.
            if arr.dtype != np.uint8 or arr.shape != want:
                raise DatasetMissing(
                    f"{self.root / (corruption + '.npy')} holds {arr.dtype} {arr.shape}; the released form (and "
                    f"rb-corrupt's) is uint8 {want}: {len(self.file_severities)} severities x {self.n} images "
                    "(labels.npy) of 32x32x3. Regenerate it with rb-corrupt, or fetch the original file")
            self._arrays[corruption] = arr
        return np.asarray(arr[self.file_severities.index(severity) * self.n + i])


class OfficialFolderSource:
    """An ImageNet-C / Tiny-ImageNet-C tree ``<corruption>/<severity>/<class>/<file>``, read lazily and
    not resized (the reference protocol only centre-crops the stored images)."""

    def __init__(self, root: str | Path, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        self.root = Path(root).expanduser()
        missing = [f"{c}/{s}" for c in corruptions for s in severities if not (self.root / c / str(s)).is_dir()]
        if missing:
            raise DatasetMissing(f"{self.root} lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; "
                                 "generate them with rb-corrupt, or leave them out with --corruptions/--severities")
        self.first = self.root / corruptions[0] / str(severities[0])
        first = ImageFolderSource.open(self.first, 0, False)
        self.classes, self.files = first.classes, first.files
        self._cells: dict[tuple[str, int], ImageFolderSource] = {}
        self._wanted = [(c, s) for c in corruptions for s in severities]

    def fingerprint(self) -> str:
        """(path, size, mtime) of every file of every cell read (one listing per cell, as reading does)."""
        h = hashlib.sha256()
        for c, s in self._wanted:
            cell = self._cell(c, s)
            h.update(f"{c}/{s}|{cell.fingerprint()}\n".encode())
        return "files:" + h.hexdigest()[:32]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c for _, c in self.files], dtype=np.int64)

    def _cell(self, c: str, s: int) -> ImageFolderSource:
        src = self._cells.get((c, s))
        if src is None:
            src = ImageFolderSource.open(self.root / c / str(s), 0, False)
            if src.files != self.files:
                raise DatasetMissing(f"{self.root / c / str(s)} does not hold the same files as "
                                     f"{self.first}; the folder is incomplete or mixed")
            self._cells[(c, s)] = src
        return src

    def read(self, corruption: str, severity: int, i: int) -> np.ndarray:
        src = self._cell(corruption, severity)
        path = src.root / src.files[i][0]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:
            raise SourceImageError(f"{path}: cannot read image ({e})") from e
