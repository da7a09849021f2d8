"""rb-eval's wall time, system time, page faults and peak memory under glibc allocator policies, side by side.

Each policy runs ``rb-eval`` in a fresh process (mallopt settings are process-wide), on the same images,
model and cells:

- ``defaults-trim-1``: glibc's defaults, the heap trimmed after every forward pass (rb-eval before
  this benchmark was written);
- ``keep-trim-1``: freed memory kept in the heap (``_alloc.keep_freed_memory``), trimmed after every pass;
- ``keep-trim-64``: kept, trimmed every 64 passes (what ``rb-eval`` does now);
- ``keep-trim-never``: kept, never trimmed within the run.

    python benchmarks/eval_allocator.py --model benchmarks/cifar_resnet18_vs_wrn40_2.py:build \
        --data CIFAR_DIR --limit 400 --batch-size 200

The arguments after the options go to ``rb-eval`` unchanged (``--suite``, ``--corruptions`` ...).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

POLICIES = {"defaults-trim-1": (False, 1), "keep-trim-1": (True, 1), "keep-trim-64": (True, 64),
            "keep-trim-never": (True, 10**12)}


def _child(policy: str, argv: list[str]) -> None:
    from robustbench_augmix import _alloc
    from robustbench_augmix import evaluation as ev
    from robustbench_augmix.cli.eval import main

    keep, every = POLICIES[policy]
    if not keep:
        _alloc.keep_freed_memory = lambda: False  # rb-eval calls it at start
    ev.TRIM_EVERY = every
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        rc = main([*argv, "--out", out, "--no-progress", "--bootstrap", "10"])
        wall = time.perf_counter() - t0
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"policy": policy, "rc": rc, "wall_s": round(wall, 1), "user_s": round(r.ru_utime, 1),
                      "system_s": round(r.ru_stime, 1), "page_faults_M": round(r.ru_minflt / 1e6, 2),
                      "peak_rss_GB": round(r.ru_maxrss / 1e6, 2)}))  # ru_maxrss is in KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, in order")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        _child(args.child, rest)
        return 0
    print("| policy | wall s | system s | page faults | peak RSS GB |\n|---|---:|---:|---:|---:|")
    for policy in args.policies.split(","):
        if policy not in POLICIES:
            ap.error(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        out = subprocess.run([sys.executable, __file__, "--child", policy, *rest], check=True,
                             capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {policy} | {row['wall_s']} | {row['system_s']} | {row['page_faults_M']} M | {row['peak_rss_GB']} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
