"""Independent NumPy / SciPy / OpenCV / scikit-image / PIL implementations of the original
generator scripts (hendrycks/robustness ImageNet-C/create_c/make_{imagenet,cifar,tinyimagenet}_c.py),
parametrised by a table row so they serve every suite. Random corruptions take their random draws
as arguments, so a test can replay the draws our sampler made and compare outputs exactly.

Inputs are uint8 (H, W, 3) RGB arrays; outputs are what the scripts store: ``np.uint8(result)``.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import skimage.color
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian


def _gauss(x, sigma, **kw):
    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None, **kw)


def disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        grid, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    d = np.array((xx**2 + yy**2) <= radius**2, dtype=dtype)
    d /= np.sum(d)
    return cv2.GaussianBlur(d, ksize=ksize, sigmaX=alias_blur)


def clipped_zoom(img, z):
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    img = scizoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


def defocus_blur(x, radius, alias_blur):
    x = np.array(x) / 255.0
    k = disk(radius=radius, alias_blur=alias_blur)
    out = np.stack([cv2.filter2D(x[:, :, d], -1, k) for d in range(3)], axis=2)
    return np.uint8(np.clip(out, 0, 1) * 255)


def zoom_blur(x, start, stop, step):
    x = (np.array(x) / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    zs = np.arange(start, stop, step)
    for z in zs:
        out += clipped_zoom(x, z)
    return np.uint8(np.clip((x + out) / (len(zs) + 1), 0, 1) * 255)


def gaussian_blur(x, sigma):
    return np.uint8(np.clip(_gauss(np.array(x) / 255.0, sigma), 0, 1) * 255)


def brightness(x, shift):
    x = skimage.color.rgb2hsv(np.array(x) / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + shift, 0, 1)
    return np.uint8(np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255)


def saturate(x, factor, shift):
    x = skimage.color.rgb2hsv(np.array(x) / 255.0)
    x[:, :, 1] = np.clip(x[:, :, 1] * factor + shift, 0, 1)
    return np.uint8(np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255)


def contrast(x, factor):
    x = np.array(x) / 255.0
    m = np.mean(x, axis=(0, 1), keepdims=True)
    return np.uint8(np.clip((x - m) * factor + m, 0, 1) * 255)


def pixelate(x, factor):
    img = Image.fromarray(x)
    h, w = x.shape[:2]
    img = img.resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(img.resize((w, h), Image.BOX))


def jpeg_compression(x, quality):
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buf))


# ----------------------------------------------------------------- random ones, draws as arguments


def glass_blur(x, sigma, max_delta, iterations, offsets):
    """offsets[it, r, c] = (dx, dy) for region row r / column c in ascending order."""
    x = np.uint8(_gauss(np.array(x) / 255.0, sigma) * 255)
    h, w = x.shape[:2]
    d = int(max_delta)
    for it in range(int(iterations)):
        for hh in range(h - d, d, -1):
            for ww in range(w - d, d, -1):
                dx, dy = offsets[it, hh - d - 1, ww - d - 1]
                hp, wp = hh + dy, ww + dx
                x[hh, ww], x[hp, wp] = x[hp, wp], x[hh, ww]  # copies, as in the script
    return np.uint8(np.clip(_gauss(x / 255.0, sigma), 0, 1) * 255)


def motion_blur(x, radius, sigma, angle, motion_fn):
    """``motion_fn`` is an ImageMagick MotionBlurImage port, e.g. imagecorruptions' ``_motion_blur``."""
    return np.uint8(np.floor(np.clip(motion_fn(np.array(x), radius=int(radius), sigma=sigma, angle=angle), 0, 255)))


def snow(x, loc, scale, zoom, threshold, blur_radius, blur_sigma, blend, normal, angle, motion_fn):
    """``normal`` is a standard normal (H, W) field; the script draws N(loc, scale) from it."""
    x = np.array(x, dtype=np.float32) / 255.0
    layer = loc + scale * normal
    layer = clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    layer = np.floor(np.clip(motion_fn(layer.astype(np.float64), radius=int(blur_radius), sigma=blur_sigma,
                                       angle=angle), 0, 255)).astype(np.uint8) / 255.0
    layer = layer[..., None]
    g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    x = blend * x + (1 - blend) * np.maximum(x, g * 1.5 + 0.5)
    return np.uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)


def frost(x, image_weight, frost_weight, texture_scale, texture_path, ys, xs):
    tex = cv2.imread(str(texture_path))
    if texture_scale != 1:
        tex = cv2.resize(tex, (0, 0), fx=texture_scale, fy=texture_scale)
    h, w = x.shape[:2]
    tex = tex[ys : ys + h, xs : xs + w][..., [2, 1, 0]]
    return np.uint8(np.clip(image_weight * np.array(x) + frost_weight * tex, 0, 255))


def elastic_transform(x, alpha, sigma, affine, jitter, ux, uy):
    """jitter: (3, 2) in U(-affine, affine); ux, uy: (H, W) in U(0, 1) (the script draws U(-1, 1))."""
    image = np.array(x, dtype=np.float32) / 255.0
    shape = image.shape
    size = shape[:2]
    center = np.float32(size) // 2
    sq = min(size) // 3
    pts1 = np.float32([center + sq, [center[0] + sq, center[1] - sq], center - sq])
    pts2 = pts1 + jitter.astype(np.float32)
    m = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, m, size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (_gauss(2 * ux - 1, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (_gauss(2 * uy - 1, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dx, dy = dx[..., None], dy[..., None]
    xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    ind = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
    out = map_coordinates(image, ind, order=1, mode="reflect").reshape(shape)
    return np.uint8(np.clip(out, 0, 1) * 255)


# --------------------------------------------------------- noise, drawn with NumPy's own generator


def noise(name, x, p, rng: np.random.Generator):
    x = np.array(x) / 255.0
    if name == "gaussian_noise":
        y = x + rng.normal(size=x.shape, scale=p["scale"])
    elif name == "shot_noise":
        y = rng.poisson(x * p["photons"]) / float(p["photons"])
    elif name == "impulse_noise":
        flip = rng.random(x.shape) < p["amount"]
        salt = rng.random(x.shape) < 0.5
        y = np.where(flip & salt, 1.0, np.where(flip, 0.0, x))
    elif name == "speckle_noise":
        y = x + x * rng.normal(size=x.shape, scale=p["scale"])
    else:
        raise KeyError(name)
    return np.uint8(np.clip(y, 0, 1) * 255)


def fog(x, thickness, wibble_decay, mapsize, rng: np.random.Generator):
    m = mapsize
    a = np.zeros((m, m))
    step, wibble = m, 100.0

    def wm(arr):
        return arr / 4 + wibble * rng.uniform(-wibble, wibble, arr.shape)

    while step >= 2:
        half = step // 2
        c = a[0:m:step, 0:m:step]
        sq = c + np.roll(c, -1, axis=0)
        sq += np.roll(sq, -1, axis=1)
        a[half:m:step, half:m:step] = wm(sq)
        dr = a[half:m:step, half:m:step]
        ul = a[0:m:step, 0:m:step]
        a[0:m:step, half:m:step] = wm(dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1))
        a[half:m:step, 0:m:step] = wm(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= wibble_decay
    a -= a.min()
    a /= a.max()
    x = np.array(x) / 255.0
    mx = x.max()
    h, w = x.shape[:2]
    x = x + thickness * a[:h, :w][..., None]
    return np.uint8(np.clip(x * mx / (mx + thickness), 0, 1) * 255)


def spatter(x, loc, scale, sigma, threshold, intensity, mode, normal):
    """``normal`` is a standard normal (H, W) field; the script draws N(loc, scale) from it."""
    x = np.array(x, dtype=np.float32) / 255.0
    liquid = gaussian(loc + scale * normal, sigma=sigma)
    liquid[liquid < threshold] = 0
    if int(mode) == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = (liquid * dist)[..., None]
        m = m / np.max(m) * intensity
        color = np.array([175, 238, 238], np.float64) / 255.0
        return np.uint8(np.clip(x + m * color, 0, 1) * 255)
    m = gaussian((liquid > threshold).astype(np.float32), sigma=intensity)
    m[m < 0.8] = 0
    color = np.array([63, 42, 20], np.float64) / 255.0 * m[..., None]
    return np.uint8(np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255)
