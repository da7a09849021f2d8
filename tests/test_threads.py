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


# --------------------------------------------------------------------------- the thread count (issue #22)

_CHILD = """
import os, sys
import robustbench_augmix.cli  # what every rb-* entry point imports first
from robustbench_augmix._threads import apply_threads
import torch
n = apply_threads(int(sys.argv[1]) if len(sys.argv) > 1 else None)
print(n, torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "-"), os.environ.get("GOMP_SPINCOUNT", "-"))
"""


def _child(args=(), cpus=None, env=None):
    import os
    import subprocess
    import sys

    e = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "OMP_WAIT_POLICY",
                                                   "GOMP_SPINCOUNT")}
    e.update(env or {})
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], env=e, capture_output=True, text=True, check=True,
                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    n, torch_n, policy, spin = out.stdout.split()
    return int(n), int(torch_n), policy, spin


def test_the_thread_count_follows_the_affinity_mask_and_threads():
    """A child pinned to one core uses one thread (torch's default would count the machine's cores); --threads
    and OMP_NUM_THREADS override; torchrun's local processes share the cores; OpenMP's spin-wait is bounded
    unless the user set a policy or spin count."""
    import os

    from robustbench_augmix._threads import SPIN_COUNT

    mine = sorted(os.sched_getaffinity(0))
    assert _child(cpus={mine[0]}) == (1, 1, "-", SPIN_COUNT)
    assert _child(["3"], cpus={mine[0]}) == (3, 3, "-", SPIN_COUNT)
    # a user's own wait policy or spin count is left as it is
    assert _child(cpus={mine[0]}, env={"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"}) == (2, 2, "ACTIVE", "-")
    assert _child(cpus={mine[0]}, env={"GOMP_SPINCOUNT": "5"})[2:] == ("-", "5")
    if len(mine) >= 2:
        assert _child(cpus=set(mine[:2]))[:2] == (2, 2)
        assert _child(cpus=set(mine[:2]), env={"LOCAL_WORLD_SIZE": "2"})[:2] == (1, 1)


def test_cgroup_quotas_are_read_from_v2_and_v1_files(tmp_path):
    from robustbench_augmix._threads import cgroup_cpu_limit

    root, proc = tmp_path / "cg", tmp_path / "cgroup"
    (root / "user.slice" / "job").mkdir(parents=True)
    proc.write_text("0::/user.slice/job\n")
    assert cgroup_cpu_limit(root, proc) is None                       # no files: unknown, no limit
    (root / "user.slice" / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, proc) is None                       # v2 unlimited
    (root / "user.slice" / "cpu.max").write_text("150000 100000\n")   # a parent's quota binds its children
    assert cgroup_cpu_limit(root, proc) == 1.5
    (root / "user.slice" / "job" / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_limit(root, proc) == 0.5                        # the tightest level wins
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1, tmp_path / "none") is None           # v1 unlimited
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_limit(v1, tmp_path / "none") == 3.0


@pytest.mark.parametrize("cli", ["corrupt", "eval", "train", "demo", "bench"])
def test_every_computing_cli_takes_threads(cli, capsys):
    import importlib

    main = importlib.import_module(f"robustbench_augmix.cli.{cli}").main
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--threads" in capsys.readouterr().out


def test_a_non_positive_thread_count_is_one_line(tmp_path, capsys):
    from robustbench_augmix.cli.corrupt import main

    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--threads", "0"]) == 2
    assert "--threads 0: give a positive number" in capsys.readouterr().err
