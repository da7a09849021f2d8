"""How far the RMS calibration error's definition (every bin) and the reference's quirk (the last bin left
out) are apart, over simulated models at N = 10,000: docs/evaluation.md quotes the range.

    python benchmarks/calibration_quirk_range.py
"""

from __future__ import annotations

import numpy as np

from robustbench_augmix import metrics


def main(trials: int = 200, n: int = 10_000) -> None:
    rng = np.random.default_rng(0)
    diffs = []
    for trial in range(trials):
        a = rng.uniform(0.5, 5)
        conf = rng.beta(a, 1, n).clip(0.1, 1)         # confidences skewed towards 1
        over = rng.uniform(0, 0.4)                    # overconfidence
        correct = rng.random(n) < np.clip(conf - over * rng.random(), 0, 1)
        if trial % 3 == 0:                            # ties at 1.0, as float32 softmax gives
            conf[: rng.integers(0, n // 2)] = 1.0
        full = metrics.rms_calibration_error(conf, correct)
        quirk = metrics.rms_calibration_error(conf, correct, reference_quirk=True)
        diffs.append(100 * abs(full - quirk))
    print(f"{trials} models, N = {n}: |definition - reference quirk| in points: min {min(diffs):.2f}, "
          f"median {np.median(diffs):.2f}, max {max(diffs):.2f}")


if __name__ == "__main__":
    main()
