"""Training data: the training splits, the random crop/flip that precede AugMix, and the demo's digits.

Every random choice (crop offset, flip, AugMix draws) comes from :func:`sample_key` of
(seed, epoch, sample index, stream), never from a global generator, so an epoch's images are the same
whatever the number of DataLoader workers or processes, and a resumed run sees the images the
interrupted one would have.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .._common import InputError, key_hash
from .sources import ArraySource, CifarSource, DatasetMissing, ImageFolderSource

# The demo's data: scikit-learn's copy of the UCI optical digits (1,797 8x8 images, 16 grey levels),
# bilinearly upsampled to CIFAR's 32 px and repeated over RGB. Split by a fixed permutation.
DIGITS_SIZE = 32
DIGITS_TEST_FRACTION = 0.3


def sample_key(seed: int, epoch: int, index: int, stream: str = "augmix") -> np.random.Generator:
    """A generator for one sample's randomness in one epoch; ``stream`` separates independent uses
    (``"crop"`` for the base transform, ``"augmix"`` for the mixing)."""
    return np.random.default_rng(key_hash("rba/v1", stream, seed, epoch, index, digest_size=16))


def digits(split: str, size: int = DIGITS_SIZE) -> ArraySource:
    """scikit-learn's handwritten digits as uint8 (N, size, size, 3) images; ``split`` is train or test
    (a fixed 70/30 permutation split, the same on every machine)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # values 0..16 (sklearn docs)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    imgs = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    perm = np.random.default_rng(20191202).permutation(len(imgs))  # arXiv id of AugMix as the seed
    n_test = int(round(DIGITS_TEST_FRACTION * len(imgs)))
    idx = np.sort(perm[:n_test] if split == "test" else perm[n_test:])
    return ArraySource(np.ascontiguousarray(imgs[idx]), d.target[idx], classes=[str(i) for i in range(10)])


def open_train_set(dataset: str, data: str | None):
    """The training split of ``dataset``: cifar10 / cifar100 (pickles; downloaded into the user cache when
    ``data`` is None), digits (shipped with scikit-learn), or an ImageFolder tree (imagenet,
    tinyimagenet: ``data`` is the train folder)."""
    if dataset == "digits":
        return digits("train")
    if dataset in ("cifar10", "cifar100"):
        src = CifarSource.open(data, dataset, split="train")
        return ArraySource(src.images, src.labels)
    if data is None:
        raise DatasetMissing(f"{dataset} training needs --data: the train folder of an ImageFolder tree")
    return ImageFolderSource.open(data, size=0, resize_crop=False)


def _read(src, i: int) -> np.ndarray | Image.Image:
    if isinstance(src, ImageFolderSource):
        path = src.root / src.files[i][0]
        with Image.open(path) as im:
            return im.convert("RGB")
    return src.read(i)


# ----------------------------------------------------------------------------- base transforms
def pad_crop_flip(a: np.ndarray, rng: np.random.Generator, size: int, padding: int = 4,
                  flip: bool = True) -> np.ndarray:
    """``RandomHorizontalFlip`` + ``RandomCrop(size, padding)`` with zero padding (cifar.py l.294-296)."""
    if flip and rng.uniform() < 0.5:
        a = a[:, ::-1]
    h, w = a.shape[:2]
    top, left = int(rng.integers(0, h + 2 * padding - size + 1)), int(rng.integers(0, w + 2 * padding - size + 1))
    # The crop window in padded coordinates, copied from the image where they overlap (np.pad costs 4x more).
    out = np.zeros((size, size, *a.shape[2:]), dtype=a.dtype)
    y0, x0 = max(top - padding, 0), max(left - padding, 0)
    y1, x1 = min(top - padding + size, h), min(left - padding + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top + padding : y1 - top + padding, x0 - left + padding : x1 - left + padding] = a[y0:y1, x0:x1]
    return out


def resized_crop_flip(a: np.ndarray | Image.Image, rng: np.random.Generator, size: int, scale=(0.08, 1.0),
                      ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """``RandomResizedCrop(size)`` + ``RandomHorizontalFlip`` (imagenet.py's train transform), with
    torchvision's sampling rule (10 tries of area and log-ratio, then a centre crop), bilinear."""
    img = a if isinstance(a, Image.Image) else Image.fromarray(a)
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(target * r))), int(round(np.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            ch, cw = h, int(round(h * ratio[1]))
        else:
            cw, ch = w, h
        top, left = (h - ch) // 2, (w - cw) // 2
    out = img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    return np.asarray(out.transpose(Image.FLIP_LEFT_RIGHT) if rng.uniform() < 0.5 else out)


def resize(a: np.ndarray | Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """No augmentation: the image at ``size`` x ``size`` (bilinear when it must be resized)."""
    img = a if isinstance(a, Image.Image) else Image.fromarray(a)
    return np.asarray(img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR))


BASE_TRANSFORMS: dict[str, Callable[..., np.ndarray]] = {
    "pad_crop_flip": pad_crop_flip,
    "pad_crop": functools.partial(pad_crop_flip, flip=False),  # for images that are not mirror-invariant
    "resized_crop_flip": resized_crop_flip,
    "none": resize,
}


@dataclass
class TrainSet:
    """A training split with its base transform: item ``i`` of epoch ``e`` is the keyed-random crop/flip
    of image ``i`` as a uint8 (H, W, 3) array, with its label. ``set_epoch`` before each epoch.

    ``policy``: a per-image augmentation applied after the crop/flip, called as ``policy(array, key)`` with
    the image's own integer key (a :class:`~robustbench_augmix.baselines.policies.KeyedPolicy`)."""

    source: ArraySource | ImageFolderSource
    transform: str = "pad_crop_flip"
    size: int = 32
    seed: int = 0
    epoch: int = 0
    policy: Callable[[np.ndarray, int], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.transform not in BASE_TRANSFORMS:
            raise InputError(f"unknown base transform {self.transform!r}; accepted: {', '.join(BASE_TRANSFORMS)}")
        self.labels = np.asarray(self.source.labels, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.view(i), int(self.labels[i])

    def view(self, i: int, stream: str = "crop") -> np.ndarray:
        """Image ``i`` through the base transform (and the policy) with the draws of ``stream``: ``"crop"``
        is the training image; other streams give independent draws of the same image (extra views)."""
        a = BASE_TRANSFORMS[self.transform](_read(self.source, i), sample_key(self.seed, self.epoch, i, stream),
                                            self.size)
        if self.policy is not None:
            a = self.policy(a, key_hash("rba/v1", "policy", stream, self.seed, self.epoch, i))
        return a
