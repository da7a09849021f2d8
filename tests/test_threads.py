"""Generated files are the same bytes whatever the number of threads (issue #21, item 8): every corruption
x severity of every suite's native size, generated in child processes with 1 and with 2 intra-op threads
(``torch.set_num_threads`` before any work, as ``rb-corrupt --workers`` does), compared byte for byte."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import photo

CHILD = textwrap.dedent("""
    import hashlib, sys
    import numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from robustbench_augmix.corruptions import apply, image_seeds, load_suite
    suite = sys.argv[2]
    u8 = torch.from_numpy(np.load(sys.argv[3])).permute(0, 3, 1, 2).contiguous()
    n = u8.shape[0]
    for name in load_suite(suite).names(extra=True):
        for s in range(1, 6):
            seeds = image_seeds(0, suite, name, s, range(n))
            y = apply(u8, name, s, suite=suite, seeds=seeds, levels=True)            # what rb-corrupt stores
            f = apply(u8.float() / 255, name, s, suite=suite, seeds=seeds)           # what rb-eval scores
            h = [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in (y, f)]
            print(name, s, *h)
""")


@pytest.mark.parametrize("suite,size,n", [("imagenet-c", 224, 3), ("tinyimagenet-c", 64, 5), ("cifar10-c", 32, 7)])
def test_every_corruption_is_thread_count_invariant(suite, size, n, tmp_path):
    imgs = tmp_path / "x.npy"
    np.save(imgs, np.stack([photo(i, size) for i in range(n)]))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    runs = [subprocess.run([sys.executable, str(script), str(t), suite, str(imgs)], capture_output=True, text=True,
                           timeout=600) for t in (1, 2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    one, two = (dict((tuple(line.split()[:2]), line.split()[2:]) for line in r.stdout.splitlines()) for r in runs)
    assert len(one) == 19 * 5 and one.keys() == two.keys()
    differ = sorted(f"{c}/{s}" for (c, s), h in one.items() if h != two[(c, s)])
    assert not differ, f"these cells change with the thread count: {differ}"
