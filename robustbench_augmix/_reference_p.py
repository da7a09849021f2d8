"""The -P generator scripts' per-image loops (hendrycks/robustness ImageNet-P/create_p/make_cifar_p.py, read at
3d6c46d), re-created for ``rb-bench perturbations`` to time ours against: one image at a time, one frame at a
time, with the libraries the scripts call (NumPy, torch on one image, skimage, Pillow through torchvision 0.2's
affine matrix, the reference package's ImageMagick motion-blur port). Timing only: the fidelity tests keep
their own re-implementations (tests/test_perturbations.py).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _affine(img: Image.Image, angle: float, scale: float, shear: float, resample) -> Image.Image:
    from .perturbations.geometric import inverse_affine_matrix

    w, h = img.size
    return img.transform((w, h), Image.AFFINE, inverse_affine_matrix(w, h, angle, scale, shear), resample)


def frames(name: str, img: np.ndarray, frames: int, params) -> list[np.ndarray]:
    """One sequence of CIFAR-10-P's ``name`` for a uint8 (32, 32, 3) image, as the script's block makes it;
    ``params(i)`` gives the frame's table values."""
    from ._reference import load_reference

    load_reference()  # the reference package (its ImageMagick port) importable, skimage's old keyword shimmed
    pil = Image.fromarray(img)
    out = []
    if name == "gaussian_noise":
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        out.append(img)
        for i in range(1, frames):
            z = torch.clamp(x + params(i).scale * torch.randn_like(x), 0, 1)
            out.append(np.uint8(z.numpy().transpose(1, 2, 0) * 255))
    elif name in ("shot_noise", "speckle_noise"):
        x = img / 255.0
        out.append(img)
        for i in range(1, frames):
            p = params(i)
            # the scripts' own calls, on NumPy's global generator
            z = (np.random.poisson(x * p.photons) / p.photons if name == "shot_noise"  # noqa: NPY002
                 else x + x * np.random.normal(size=x.shape, scale=p.scale))  # noqa: NPY002
            out.append(np.uint8(255 * np.clip(z, 0, 1)))
    elif name == "brightness":
        import skimage.color as skcolor

        for i in range(frames):
            x = skcolor.rgb2hsv(img / 255.0)
            x[:, :, 2] = np.clip(x[:, :, 2] + params(i).shift, 0, 1)
            out.append(np.uint8(skcolor.hsv2rgb(x) * 255))
    elif name == "gaussian_blur":
        from skimage.filters import gaussian

        for i in range(frames):
            p = params(i)
            out.append(np.uint8(255 * gaussian(img / 255.0, sigma=p.sigma, channel_axis=-1, truncate=p.truncate)))
    elif name == "motion_blur":
        from imagecorruptions.corruptions import _motion_blur

        for i in range(frames):
            p = params(i)
            out.append(np.uint8(np.clip(_motion_blur(img, radius=int(p.radius), sigma=p.sigma, angle=p.angle), 0, 255)))
    elif name == "translate":
        w, h = pil.size
        for i in range(frames):
            m = (1, 0, -params(i).shift, 0, 1, 0)
            out.append(np.asarray(pil.transform((w, h), Image.AFFINE, m, Image.NEAREST)))
    elif name in ("rotate", "scale", "shear"):
        for i in range(frames):
            p = params(i)
            out.append(np.asarray(_affine(pil, p.get("angle", 0.0), p.get("scale", 1.0), p.get("shear", 0.0),
                                          Image.BILINEAR)))
    elif name == "zoom_blur":
        avg = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
        out.append(img)
        for i in range(1, frames):
            z = _affine(pil, 0.0, 1 + 0.004 * i, 0.0, Image.BILINEAR)
            avg += torch.from_numpy(np.array(z)).permute(2, 0, 1).float().div(255)
            out.append((avg / (i + 1)).mul(255).byte().permute(1, 2, 0).numpy())
    elif name == "tilt":
        import cv2

        from .perturbations.geometric import tilt_matrix

        h, w = img.shape[:2]
        for i in range(frames):
            out.append(cv2.warpPerspective(img, tilt_matrix(w, h, params(i).angle), (w, h)))
    elif name == "spatter":
        import cv2
        from skimage.filters import gaussian

        p = params(0)
        x = cv2.cvtColor(np.array(img, dtype=np.float32) / 255.0, cv2.COLOR_BGR2BGRA)
        layer = np.random.normal(size=img.shape[:2], loc=p.loc, scale=p.scale)  # noqa: NPY002  (the script's)
        layer = gaussian(layer, sigma=p.sigma)
        layer[layer < p.threshold] = 0
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        color = None
        for _ in range(frames):
            li = (layer * 255).astype(np.uint8)
            dist = cv2.distanceTransform(255 - cv2.Canny(li, 50, 150), cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
            dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
            m = cv2.cvtColor(li * dist, cv2.COLOR_GRAY2BGRA)
            m = m / np.max(m, axis=(0, 1)) * p.intensity
            if color is None:
                color = cv2.cvtColor(np.concatenate([c / 255.0 * np.ones_like(m[..., :1]) for c in (175, 238, 238)],
                                                    axis=2), cv2.COLOR_BGR2BGRA)
            out.append(np.uint8(cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255))
            layer = np.apply_along_axis(lambda col: np.convolve(col, np.array(p.column_kernel), mode="same"), 0, layer)
    elif name == "snow":
        import cv2
        from imagecorruptions.corruptions import _motion_blur
        from scipy.ndimage import zoom as scizoom

        p = params(0)
        x = img / 255.0
        layer = np.random.normal(size=img.shape[:2], loc=p.loc, scale=p.scale)  # noqa: NPY002  (the script's)
        h = layer.shape[0]
        ch = int(np.ceil(h / p.zoom))
        top = (h - ch) // 2
        layer = scizoom(layer[top:top + ch, top:top + ch, None], (p.zoom, p.zoom, 1), order=1)
        trim = (layer.shape[0] - h) // 2
        layer = layer[trim:trim + h, trim:trim + h]
        layer[layer < p.threshold] = 0
        layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
        g = cv2.cvtColor(np.float32(x), cv2.COLOR_RGB2GRAY)[..., None]
        for i in range(frames):
            q = params(i)
            m = np.floor(np.clip(_motion_blur(layer.astype(np.float64), radius=int(q.blur_radius), sigma=q.blur_sigma,
                                              angle=q.angle), 0, 255))[..., None] / 255.0
            z = q.blend * x + (1 - q.blend) * np.maximum(x, g * 1.5 + 0.5)
            out.append(np.uint8(np.clip(z + m + np.rot90(m, k=2), 0, 1) * 255))
    else:
        raise KeyError(f"no reference loop for {name}")
    return out
