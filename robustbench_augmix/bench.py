"""Throughput benchmarks, measured side by side in one run on this machine."""

from __future__ import annotations

import time

import numpy as np
import torch

from .corruptions import REGISTRY, apply, load_suite
from .corruptions._rng import image_seed


def _photos(size: int, n: int) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    pics = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out = []
    for i in range(n):
        a = pics[i % 2]
        h, w = a.shape[:2]
        s = min(h, w)
        off = (i * 7) % (w - s + 1)
        out.append(np.asarray(Image.fromarray(a[:, off : off + s]).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


def _timeit(fn, min_time: float, min_calls: int = 2, max_calls: int = 200) -> float:
    fn()  # warm-up (caches, tables)
    t0, calls = time.perf_counter(), 0
    while calls < min_calls or (time.perf_counter() - t0 < min_time and calls < max_calls):
        fn()
        calls += 1
    return (time.perf_counter() - t0) / calls


def bench_corruptions(sizes=(224, 32), severities=(1, 3, 5), suite="imagenet-c", names=None,
                      batch=None, device="cpu", reference=True, min_time=0.3, log=print) -> list[dict]:
    """ms per image for each corruption: ours batched vs the reference package per image.

    Both use the ImageNet-C table at every size (the reference package has only that table), on the
    same photographs. The reference runs single-threaded per image as its API does; ours runs
    batched with torch's default threads.
    """
    ref = None
    if reference:
        from ._reference import load_reference

        ref = load_reference()
    s = load_suite(suite)
    names = names or [n for n in s.names(extra=True) if n in REGISTRY]
    rows = []
    for size in sizes:
        b = batch or (64 if size >= 128 else 512)
        imgs = _photos(size, b)
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255).to(device)
        for name in names:
            ours = 0.0
            for sev in severities:
                seeds = [image_seed(0, suite, name, sev, i) for i in range(b)]

                def run(sev=sev, seeds=seeds, x=x, name=name):
                    apply(x, name, sev, suite=suite, seeds=seeds)
                    if device != "cpu":
                        torch.cuda.synchronize()

                ours += _timeit(run, min_time) / b
            ours /= len(severities)
            theirs = None
            if ref is not None:
                theirs = 0.0
                for sev in severities:
                    theirs += _timeit(lambda sev=sev, img=imgs[0], name=name: ref.corrupt(
                        img, severity=sev, corruption_name=name),
                                      min_time, min_calls=1, max_calls=100)
                theirs /= len(severities)
            row = {"corruption": name, "size": size, "extra": s.corruptions[name].extra,
                   "ours_ms": ours * 1e3, "reference_ms": None if theirs is None else theirs * 1e3}
            rows.append(row)
            log(row)
    return rows
