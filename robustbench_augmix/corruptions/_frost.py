"""Frost textures: the six images of the reference generator, which are not ours to ship.

Looked up, in order: a folder the user names (``set_frost_dir`` / ``RBA_FROST_DIR`` /
``rb-corrupt --frost-dir``), an installed copy of the reference package ``imagecorruptions``
(``pip install imagecorruptions``; found without importing it), the user cache, and finally a
download into the user cache, checked against the sha256 sums below.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import urllib.request
from pathlib import Path

import numpy as np

from .. import _common
from .._common import RBAError, atomic_write, sha256_file

# The files as shipped in hendrycks/robustness ImageNet-C/create_c/ and, byte-identical, in
# bethgelab/imagecorruptions imagecorruptions/frost/ (sha256 of the PyPI 1.1.2 copy).
FROST_FILES: dict[str, str] = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
    "frost6.jpg": "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25",
}
# The reference draws np.random.randint(5): frost6 is listed but never chosen (IN l. 392-394).
USED = tuple(sorted(FROST_FILES))[:5]
FROST_URL = "https://raw.githubusercontent.com/bethgelab/imagecorruptions/master/imagecorruptions/frost/{name}"

_user_dir: Path | None = None


class FrostTexturesMissing(RBAError, RuntimeError):
    """The frost textures are not found, or do not match the reference files."""


def set_frost_dir(path: str | os.PathLike | None) -> None:
    """Use the frost textures in ``path`` (a folder holding frost1.png ... frost6.jpg)."""
    global _user_dir
    _user_dir = Path(path).expanduser() if path is not None else None
    load_textures.cache_clear()


def cache_dir() -> Path:
    return _common.cache_dir("frost")


def _candidates() -> list[tuple[str, Path]]:
    out = []
    if _user_dir is not None:
        out.append(("the folder set with set_frost_dir/--frost-dir", _user_dir))
    if os.environ.get("RBA_FROST_DIR"):
        out.append(("RBA_FROST_DIR", Path(os.environ["RBA_FROST_DIR"]).expanduser()))
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            out.append(("the installed imagecorruptions package", Path(loc) / "frost"))
    out.append(("the user cache", cache_dir()))
    return out


def _download(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in FROST_FILES.items():
        target = dest / name
        if target.exists() and sha256_file(target) == digest:
            continue
        with urllib.request.urlopen(FROST_URL.format(name=name), timeout=30) as r:
            data = r.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise FrostTexturesMissing(f"downloaded {name} does not match its sha256 {digest}")
        atomic_write(target, lambda p, data=data: p.write_bytes(data))


def frost_dir(download: bool = True) -> Path:
    """The folder whose textures will be used; downloads into the cache if none is found."""
    looked = []
    for what, d in _candidates():
        looked.append(f"{what} ({d})")
        if all((d / n).is_file() for n in USED):
            bad = [n for n in USED if sha256_file(d / n) != FROST_FILES[n]]
            if bad:
                raise FrostTexturesMissing(
                    f"frost textures in {d} do not match the reference files ({', '.join(bad)}): "
                    "replace them with the originals from hendrycks/robustness ImageNet-C/create_c/"
                )
            return d
    if download:
        try:
            _download(cache_dir())
            return cache_dir()
        except (OSError, ValueError) as e:  # URLError is an OSError
            reason = f"download failed: {e}"
    else:
        reason = "download disabled"
    raise FrostTexturesMissing(
        "the frost corruption needs the six frost textures of the reference generator "
        f"(frost1.png ... frost6.jpg); looked in: {'; '.join(looked)}; {reason}. "
        "Provide them with one of: `pip install imagecorruptions` (ships them), "
        "`rb-corrupt --frost-dir DIR` / RBA_FROST_DIR=DIR / robustbench_augmix.set_frost_dir(DIR) "
        f"pointing at a copy of hendrycks/robustness ImageNet-C/create_c/, or copy them into {cache_dir()}."
    )


@functools.cache
def load_textures() -> tuple[np.ndarray, ...]:
    """The 5 usable textures as uint8 (H, W, 3) RGB arrays (alpha dropped, as cv2.imread does)."""
    from PIL import Image

    d = frost_dir()
    return tuple(np.asarray(Image.open(d / n).convert("RGB")) for n in USED)


def resize_linear_cv2(img: np.ndarray, fy: float, fx: float) -> np.ndarray:
    """``cv2.resize(img, (0, 0), fx=fx, fy=fy)`` with INTER_LINEAR for a uint8 (H, W, C) image.

    Output size ``round(in * f)``; source coordinate ``(i + 0.5) / f - 0.5`` clamped to the image,
    bilinear, rounded to uint8. (OpenCV uses 11-bit fixed-point weights: up to 1 level apart.)
    """
    h, w = img.shape[:2]
    oh, ow = int(np.rint(h * fy)), int(np.rint(w * fx))

    def axis(n_in, n_out, f):
        s = (np.arange(n_out) + 0.5) / f - 0.5
        s = np.clip(s, 0, n_in - 1)
        i0 = np.floor(s).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, s - i0

    y0, y1, wy = axis(h, oh, fy)
    x0, x1, wx = axis(w, ow, fx)
    a = img.astype(np.float64)
    rows = a[y0] * (1 - wy)[:, None, None] + a[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=32)
def scaled_textures(scale: float, min_h: int, min_w: int) -> tuple[np.ndarray, ...]:
    """The usable textures resized by ``scale`` (none at 1.0), each enlarged further if needed so that
    a crop of ``min_h`` x ``min_w`` fits with room for the reference's random offset."""
    out = []
    for t in load_textures():
        s = scale
        h, w = t.shape[:2]
        need = max((min_h + 1) / (h * s), (min_w + 1) / (w * s), 1.0)
        s = s * need
        out.append(t if s == 1.0 else resize_linear_cv2(t, s, s))
    return tuple(out)
