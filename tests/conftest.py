"""Shared fixtures: real photographs at each suite's native size, and the reference package."""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Determinism tests compare float kernels across batch sizes; keep the thread count as CI has it.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@functools.cache
def photographs() -> list[np.ndarray]:
    """Five real photographs (uint8 RGB): scikit-learn's and scikit-image's sample images."""
    from sklearn.datasets import load_sample_image

    pics = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    try:
        from skimage import data

        pics += [data.astronaut(), data.coffee(), data.chelsea()]
    except ImportError:  # pragma: no cover - scikit-image comes with the dev extra
        pass
    return pics


@functools.cache
def photo(i: int, size: int) -> np.ndarray:
    """Photograph i as the reference pipeline sees it: a centre square, resized (PIL bilinear)."""
    a = photographs()[i % len(photographs())]
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))


def to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="session")
def reference():
    """bethgelab/imagecorruptions 1.1.2, the PyPI build of the ImageNet-C generator (shimmed)."""
    from robustbench_augmix._reference import load_reference

    try:
        return load_reference()
    except ImportError as e:
        pytest.skip(str(e))


def write_cifar(root: Path, imgs: np.ndarray, labels, dataset: str = "cifar10") -> Path:
    """Write uint8 (N, 32, 32, 3) images as the CIFAR test split in torchvision's python-pickle layout."""
    from robustbench_augmix.data.sources import write_cifar as write

    return write(root, imgs, labels, dataset)


def card_toml(card_id: str, dataset: str = "cifar10", weights: str = 'licence = "own"') -> str:
    """A minimal model card for the small CIFAR CNN, with the given ``[weights]`` lines."""
    return (f'id = "{card_id}"\nname = "{card_id}"\ndataset = "{dataset}"\nnum_classes = 10\n'
            f'builder = "cifar:smallcnn"\nparams = 1\n[weights]\n{weights}\n[preprocess]\ninput_size = 32\n'
            'mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n[recipe]\n[reported]\n')


@pytest.fixture
def cifar_root(tmp_path):
    """A 12-image CIFAR-10 test split in torchvision's python-pickle layout."""
    rng = np.random.default_rng(0)
    imgs = np.stack([photo(i, 32) for i in range(5)] + [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                                                        for _ in range(7)])
    return write_cifar(tmp_path / "cifar", imgs, list(range(10)) + [0, 1]), imgs


@pytest.fixture
def folder_root(tmp_path):
    """A 2-class ImageFolder tree of JPEG photographs of assorted sizes."""
    root = tmp_path / "val"
    for ci, cls in enumerate(["n01", "n02"]):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            a = photo(ci * 3 + k, 80 + 10 * k)
            Image.fromarray(a).save(root / cls / f"img_{k}.JPEG", quality=95)
    return root


def write_cifar_train(root: Path, n: int = 64) -> Path:
    """A CIFAR-10 training set of ``n`` noisy photographs in five batches, and a 20-image test batch, in
    torchvision's python-pickle layout."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(1, 6):
        imgs = np.stack([photo((k + i) % 5, 32) for i in range(n // 5)])
        imgs = np.clip(imgs.astype(int) + rng.integers(-20, 20, imgs.shape), 0, 255).astype(np.uint8)
        with open(d / f"data_batch_{k}", "wb") as f:
            pickle.dump({b"data": imgs.transpose(0, 3, 1, 2).reshape(len(imgs), -1),
                         b"labels": [(i + k) % 10 for i in range(len(imgs))]}, f)
    test = np.stack([photo(i % 5, 32) for i in range(20)])
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": test.transpose(0, 3, 1, 2).reshape(20, -1), b"labels": [i % 10 for i in range(20)]}, f)
    return root
