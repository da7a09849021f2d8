"""How often, and in which direction, our 8-bit outputs differ from the original algorithm's for the
deterministic corruptions: the share of values one level above / below the reference per suite x
severity, over the five test photographs. For docs/corruptions.md (the float32 + rounding-margin note).

Run: python benchmarks/level_differences.py [--only brightness]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference_impl as ref  # noqa: E402
from conftest import photo, photographs  # noqa: E402
from test_fidelity import _DET_ARGS, SIZES, SUITES, args, ours  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="one corruption")
    a = ap.parse_args()
    names = [a.only] if a.only else list(_DET_ARGS)
    print("| corruption | suite | severity | values | one level up | one level down | further apart |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        for suite in SUITES:
            imgs = [photo(i, SIZES[suite]) for i in range(len(photographs()))]
            for sev in range(1, 6):
                got, _, p = ours(name, suite, sev, imgs)
                d = np.concatenate([(y.astype(np.int16) - getattr(ref, name)(img, *args(p, *_DET_ARGS[name]))
                                     .astype(np.int16)).ravel() for img, y in zip(imgs, got, strict=True)])
                up, down, far = (d == 1).mean(), (d == -1).mean(), (np.abs(d) > 1).mean()
                print(f"| {name} | {suite} | {sev} | {d.size} | {100 * up:.2f} % | {100 * down:.2f} % | "
                      f"{100 * far:.2f} % |")


if __name__ == "__main__":
    main()
