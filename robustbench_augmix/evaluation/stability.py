"""Perturbation stability of a model on a -P suite: flip probability and top-5 distance per perturbation,
the CIFAR mean flip probability, and mFR / mT5D against a baseline's values.

Sequences are made on the fly by :func:`~robustbench_augmix.perturbations.perturb` (keyed per image, so any
batch size gives the same frames) or read from the released CIFAR-P files (``<perturbation>.npy``, uint8
``(N, frames, H, W, 3)``; a noise sequence at difficulty d > 1 is ``<perturbation>_<d>.npy``), memory-mapped and
read a batch at a time. Per batch only the frames' logits are kept long enough to score the sequences: never a
whole perturbation in float memory. This is the library call; ``rb-eval`` does not run -P suites yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..perturbations import check_perturbation, load_psuite, perturb
from ..preprocess import Preprocess
from .cache import EvaluationError

__all__ = ["evaluate_stability", "official_sequences"]


def official_sequences(folder: str | Path, suite: str, name: str, difficulty: int = 1) -> np.ndarray:
    """The released sequences of one perturbation as a read-only memory map, checked: uint8
    ``(N, frames, size, size, 3)`` with the table's frame count and the suite's size."""
    s = load_psuite(suite)
    spec = s.perturbations[name]
    path = Path(folder).expanduser() / f"{s.release_stem(name, difficulty)}.npy"
    if not path.is_file():
        raise EvaluationError(f"{path} does not exist: --source official needs the released {s.name} files "
                              f"(<perturbation>.npy) in {folder}")
    try:
        a = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise EvaluationError(f"{path} is not a .npy array ({e})") from None
    want = (spec.frames, s.image_size, s.image_size, 3)
    if a.dtype != np.uint8 or a.ndim != 5 or tuple(a.shape[1:]) != want:
        raise EvaluationError(f"{path} holds {a.dtype} {tuple(a.shape)}; {s.name} {name} is uint8 (N, {want[0]}, "
                              f"{want[1]}, {want[2]}, 3): {spec.frames} frames of {s.image_size}-px RGB images")
    return a


def evaluate_stability(model: torch.nn.Module, suite: str = "cifar10-p", *, images: torch.Tensor | None = None,
                       official: str | Path | None = None, perturbations: Sequence[str] | None = None,
                       difficulty: int = 1, seed: int = 0, preprocess: Preprocess | None = None,
                       device: str = "cpu", batch_size: int = 32, limit: int | None = None,
                       baseline: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    """Score a model's stability on a -P suite.

    Args:
        images: uint8 (N, 3, H, W) clean images at the suite's size, for sequences made on the fly; or
        official: the folder of the released ``.npy`` sequences (CIFAR-10/100-P).
        perturbations: default the list the suite's headline number averages: CIFAR's mean-FP list
            (cifar-p-eval.py's, spatter in place of snow), else the test perturbations (on the fly, those
            generated here).
        difficulty: 1..3, as ImageNet-P/test.py: the noise level of the noise sequences, a frame stride for
            the others.
        baseline: ``{"flip_probability": {p: FP}, "top5_distance": {p: T5D}}`` of the normalising model
            (AlexNet for ImageNet-P), e.g. this function's output for it; gives FR, mFR and mT5D.
    Returns:
        ``{"suite", "difficulty", "n_sequences", "perturbations": {p: {"flip_probability", "top5_distance",
        "frames"}}, "mean_flip_probability", "mean_flip_probability_over", ...}``, plus ``"flip_rate"``,
        ``"mfr"``, ``"mt5d"`` with a baseline. Probabilities and distances as fractions / raw distances.
    """
    s = load_psuite(suite)
    if (images is None) == (official is None):
        raise EvaluationError("pass either images (sequences made on the fly) or official (the released files)")
    # default: the list the suite's headline number averages (CIFAR: cifar-p-eval.py's; else the test split)
    names = list(perturbations) if perturbations is not None else [
        p for p in (s.mean_fp or s.names("test")) if official is not None or s.perturbations[p].kernel]
    if not names:
        raise EvaluationError(f"no perturbation to evaluate on {s.id}")
    for p in names:
        if official is None or p not in s.perturbations:
            check_perturbation(p, s)  # unknown names (and, on the fly, those not generated yet) with the choices
    if images is not None and (images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3):
        raise EvaluationError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    pre = preprocess or Preprocess()
    dev = torch.device(device)
    model = model.to(dev).eval()
    out: dict = {"suite": s.id, "table_hash": s.table_hash, "difficulty": difficulty, "seed": seed,
                 "source": "official" if official is not None else "generate", "perturbations": {}}
    for name in names:
        spec = s.perturbations[name]
        seqs = official_sequences(official, suite, name, difficulty) if official is not None else None
        n = len(seqs) if seqs is not None else len(images)
        n = min(n, limit) if limit else n
        fp, t5d = [], []
        for i in range(0, n, batch_size):
            idx = list(range(i, min(i + batch_size, n)))
            if seqs is not None:
                batch = np.array(seqs[idx[0]: idx[-1] + 1])  # this batch, read from the map
                frames = torch.from_numpy(batch).permute(0, 1, 4, 2, 3)
            else:
                frames = perturb(images[idx[0]: idx[-1] + 1], name, suite=suite, difficulty=difficulty, seed=seed,
                                 index=idx)
            logits = _logits(model, frames, pre, dev)                        # (B, T, K)
            fp.append(metrics.flip_probabilities(logits.argmax(-1), spec.noise, difficulty))
            t5d.append(metrics.top5_distances(logits, spec.noise, difficulty))
        out["perturbations"][name] = {"flip_probability": float(np.concatenate(fp).mean()),
                                      "top5_distance": float(np.concatenate(t5d).mean()), "frames": spec.frames,
                                      "noise": spec.noise}
        out["n_sequences"] = n
    per = out["perturbations"]
    over = [p for p in (s.mean_fp or s.names("test")) if p in per]
    out["mean_flip_probability"] = float(np.mean([per[p]["flip_probability"] for p in over])) if over else None
    out["mean_flip_probability_over"] = over
    if baseline is not None:
        test = [p for p in s.names("test") if p in per]
        fps = {p: per[p]["flip_probability"] for p in test}
        t5s = {p: per[p]["top5_distance"] for p in test}
        out["flip_rate"] = metrics.flip_rates(fps, baseline["flip_probability"], test)
        out["mfr"] = metrics.mean_flip_rate(fps, baseline["flip_probability"], test)
        out["mt5d"] = metrics.mean_flip_rate(t5s, baseline["top5_distance"], test)
        out["normalised_over"] = test
    return out


def _logits(model: torch.nn.Module, frames: torch.Tensor, pre: Preprocess, dev: torch.device) -> np.ndarray:
    """(B, T, 3, H, W) uint8 frames -> (B, T, K) float64 logits."""
    b, t = frames.shape[:2]
    x = pre(frames.reshape(b * t, *frames.shape[2:]).to(dev).float().div_(255))
    with torch.no_grad():
        z = model(x)
    z = (z[0] if isinstance(z, (tuple, list)) else z).float()
    if not bool(torch.isfinite(z).all()):
        raise EvaluationError("the model gives non-finite scores (NaN or inf) on perturbation frames")
    return z.reshape(b, t, -1).double().cpu().numpy()
