"""Perturbation sequences: :func:`perturb` makes the frames of a -P sequence for a batch of images.

Each frame of a generated perturbation is one call of a -C kernel with that frame's parameters
(:meth:`~.tables.PerturbationSpec.params`), or of a -P kernel of :mod:`.geometric`: the noise sequences are a
clean frame 0 and independent noisy draws of the same image (not cumulative), brightness shifts HSV value
linearly with the frame, translate moves the image a pixel a frame. Every frame's
randomness is keyed on (seed, suite, perturbation, difficulty, frame, image index), so a sequence is the
same whatever the batch, worker or process count.
"""

from __future__ import annotations

import difflib

import torch

from .._common import InputError, RBAError
from ..corruptions._core import _check_size, _indices, apply_params
from ..corruptions._ops import to_uint8
from ..corruptions._rng import image_seeds
from .geometric import KERNELS, zoom_blur_sequence
from .tables import DIFFICULTIES, PSuite, load_psuite
from .weather import spatter_sequence

# The kernels whose frames depend on the frames before: they make the whole sequence,
# called as fn(images, spec, suite, seed, difficulty, indices).
SEQUENCES = {"zoom_blur_sequence": zoom_blur_sequence, "spatter_sequence": spatter_sequence}

__all__ = ["NotGeneratedYet", "UnknownPerturbation", "perturb", "sequence_seeds"]


class UnknownPerturbation(RBAError, ValueError):
    """A perturbation name that the -P suite's table does not have."""


class NotGeneratedYet(RBAError, ValueError):
    """A perturbation listed in the table (frames, split) without a kernel here yet."""


def check_perturbation(name, suite: PSuite) -> None:
    """Raise unless ``name`` is in ``suite``'s table and has a kernel; the error lists the accepted names."""
    if not isinstance(name, str) or name not in suite.perturbations:
        near = difflib.get_close_matches(str(name), list(suite.perturbations), n=1)
        raise UnknownPerturbation(f"unknown perturbation {name!r} for suite {suite.id!r}"
                                  + (f"; did you mean {near[0]!r}?" if near else "")
                                  + f" Accepted: {', '.join(suite.perturbations)}")
    if not suite.perturbations[name].kernel:
        raise NotGeneratedYet(f"{suite.id} {name} is in the table but not generated yet; generated: "
                              f"{', '.join(suite.generated())}")


def sequence_seeds(seed: int, suite: str, name: str, difficulty: int, frame: int, index: list[int]) -> list[int]:
    """The per-image seeds of one frame: keyed like -C's, with (perturbation@difficulty, frame) in place of
    (corruption, severity)."""
    return image_seeds(seed, suite, f"{name}@{difficulty}", frame, index)


def _center_crop(size: int):
    """torchvision's ``CenterCrop(size)``: top ``int(round((h - size) / 2))``, left likewise."""
    def crop(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        return t[..., top:top + size, left:left + size]
    return crop


def perturb(images: torch.Tensor, perturbation: str, *, suite: str = "imagenet-p", difficulty: int = 1,
            seed: int = 0, index=None) -> torch.Tensor:
    """The frames of a -P sequence for each image.

    Args:
        images: (N, 3, H, W) uint8, or float in [0, 1] (floored to 8-bit levels first, as the reference's
            frames are 8-bit images), at the suite's size after its preprocessing (``PSuite.meta["preprocess"]``);
            for ImageNet-P's and Tiny-ImageNet-P's geometric perturbations (``on_source`` in the table) the
            resized source image instead (shorter side ``meta["source_size"]``), which they warp before the
            centre crop, as the scripts do.
        perturbation: a name from ``perturbation_names(suite, "all")`` that has a kernel.
        difficulty: 1..3; for the noise sequences it picks the noise level (the released ``<name>_<d>`` sets);
            for the others it changes nothing here (it strides the frames when they are scored).
        seed, index: as for :func:`~robustbench_augmix.corruptions.corrupt`.

    Returns:
        (N, T, 3, H, W) uint8 frames, T the perturbation's frame count.

    Examples:
        >>> import torch
        >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        >>> v = perturb(x, "gaussian_noise", suite="cifar10-p")
        >>> tuple(v.shape), bool(torch.equal(v[:, 0], x))
        ((2, 31, 3, 32, 32), True)
    """
    s = load_psuite(suite)
    check_perturbation(perturbation, s)
    spec = s.perturbations[perturbation]
    if isinstance(difficulty, bool) or difficulty not in DIFFICULTIES:
        raise InputError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must be an (N, 3, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    _check_size(images.shape[-2:])
    if images.dtype != torch.uint8:
        if not images.dtype.is_floating_point or (images.numel() and (images.min() < 0 or images.max() > 1)):
            raise InputError("images must be uint8, or float in [0, 1]")
        images = to_uint8(images)
    idx = _indices(index, images.shape[0])
    size = s.image_size
    if spec.on_source:
        # ImageNet-P / Tiny-ImageNet-P warp the resized source image (shorter side 256 / 64), then centre-crop.
        if min(images.shape[-2:]) != int(s.meta["source_size"]):
            raise InputError(f"{s.id} {perturbation} warps the resized source image (shorter side "
                             f"{s.meta['source_size']}, before the {size}-px centre crop), got "
                             f"{tuple(images.shape[-2:])}")
    crop = _center_crop(size) if spec.on_source else (lambda t: t)
    if spec.kernel in SEQUENCES:                     # each frame depends on the ones before (zoom blur's mean)
        return SEQUENCES[spec.kernel](images, spec, s, int(seed), difficulty, idx, crop)
    out = torch.empty((images.shape[0], spec.frames, 3, *crop(images).shape[-2:]), dtype=torch.uint8,
                      device=images.device)
    for i in range(spec.frames):
        if spec.noise and i == 0:
            out[:, 0] = images                       # the clean frame the noisy ones are compared with
            continue
        params = spec.params(difficulty, i, s)
        if spec.kernel in KERNELS:                   # a -P kernel (geometric): deterministic, on the levels
            out[:, i] = crop(KERNELS[spec.kernel](images, params))
            continue
        # a sequence-wide draw (snow's layer) is keyed as frame 0's, so every frame sees the same one
        seeds = sequence_seeds(int(seed), s.id, perturbation, difficulty, 0 if spec.sequence_draws else i, idx)
        out[:, i] = apply_params(images, spec.kernel, params, seeds=seeds, levels=True)
    return out
