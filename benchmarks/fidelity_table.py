"""Measure how far our kernels are from the references on real photographs: the minimum and median
PSNR (dB) per corruption over suites x severities x photographs, for docs/corruptions.md.

Deterministic corruptions are compared with the original algorithm (tests/reference_impl.py) and,
for the ImageNet-C table, with the PyPI reference package; random ones replay our draws through the
reference algorithm. Run: python benchmarks/fidelity_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference_impl as ref  # noqa: E402
from conftest import photo  # noqa: E402
from test_fidelity import _DET_ARGS, SIZES, SUITES, args, ours, psnr  # noqa: E402

from robustbench_augmix._reference import load_reference  # noqa: E402
from robustbench_augmix.corruptions import _frost  # noqa: E402


def main() -> None:
    ic = load_reference()
    from imagecorruptions.corruptions import _motion_blur

    res: dict[str, list[float]] = {}
    for suite in SUITES:
        n = 3
        imgs = [photo(i, SIZES[suite]) for i in range(n)]
        for sev in range(1, 6):
            for name, keys in _DET_ARGS.items():
                got, _, p = ours(name, suite, sev, imgs)
                for img, y in zip(imgs, got, strict=True):
                    res.setdefault(name, []).append(psnr(y, getattr(ref, name)(img, *args(p, *keys))))
                    if suite == "imagenet-c":
                        res.setdefault(name + " (PyPI package)", []).append(
                            psnr(y, ic.corrupt(img, severity=sev, corruption_name=name)))
            got, d, p = ours("motion_blur", suite, sev, imgs)
            for i, (img, y) in enumerate(zip(imgs, got, strict=True)):
                res.setdefault("motion_blur", []).append(
                    psnr(y, ref.motion_blur(img, p.radius, p.sigma, float(d["angle"][i]), _motion_blur)))
            got, d, p = ours("snow", suite, sev, imgs)
            names = ("loc", "scale", "zoom", "threshold", "blur_radius", "blur_sigma", "blend")
            for i, (img, y) in enumerate(zip(imgs, got, strict=True)):
                res.setdefault("snow", []).append(psnr(y, ref.snow(
                    img, *args(p, *names), d["flakes"][i, 0].double().numpy(), float(d["angle"][i]), _motion_blur)))
            got, d, p = ours("frost", suite, sev, imgs)
            for i, (img, y) in enumerate(zip(imgs, got, strict=True)):
                path = _frost.frost_dir() / _frost.USED[int(d["texture"][i])]
                res.setdefault("frost", []).append(psnr(y, ref.frost(
                    img, p.image_weight, p.frost_weight, p.texture_scale, path, *d["start"][i].tolist())))
            got, d, p = ours("elastic_transform", suite, sev, imgs)
            for i, (img, y) in enumerate(zip(imgs, got, strict=True)):
                res.setdefault("elastic_transform", []).append(psnr(y, ref.elastic_transform(
                    img, p.alpha, p.sigma, p.affine, d["jitter"][i].numpy(), d["dx"][i].numpy(), d["dy"][i].numpy())))
            got, d, p = ours("spatter", suite, sev, imgs)
            keys = ("loc", "scale", "sigma", "threshold", "intensity", "mode")
            for i, (img, y) in enumerate(zip(imgs, got, strict=True)):
                res.setdefault("spatter", []).append(psnr(y, ref.spatter(
                    img, *args(p, *keys), d["liquid"][i, 0].double().numpy())))
            gi = imgs[:1] if suite == "imagenet-c" else imgs
            got, d, p = ours("glass_blur", suite, sev, gi)
            for i, (img, y) in enumerate(zip(gi, got, strict=True)):
                res.setdefault("glass_blur", []).append(psnr(y, ref.glass_blur(
                    img, p.sigma, p.max_delta, p.iterations, d["offsets"][i].numpy())))
    print("| corruption | compared with | min PSNR (dB) | median PSNR (dB) | cases |")
    print("|---|---|---|---|---|")
    for k in sorted(res):
        v = np.array(res[k])
        what = "PyPI imagecorruptions, ImageNet-C table" if "PyPI" in k else "original algorithm, all 3 tables"
        fmt = lambda a: "identical" if np.isinf(a) else f"{a:.1f}"  # noqa: E731
        print(f"| {k.split(' (')[0]} | {what} | {fmt(v.min())} | {fmt(np.median(v))} | {len(v)} |")


if __name__ == "__main__":
    main()
