"""rb-demo: the whole toolkit offline in a few CPU minutes. Trains a small CNN on scikit-learn's digits with
standard training, Mixup and AugMix + JSD (--methods: any others), corrupts the test split with the
CIFAR-10-C tables, evaluates every model, and prints the comparison, also in the layout of the AugMix
paper's Table 1 (result files and report.md in --out)."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from .._threads import THREADS_HELP

EXAMPLES = """examples:
  rb-demo                                  # one seed, standard, Mixup, AugMix: about 4 minutes on 2 CPU cores
  rb-demo --seeds 0,1,2 --out demo3        # the 3-seed comparison docs/training.md reports
  rb-demo --methods all --out demo-all     # every training method of the paper's comparison (and more)
  rb-demo --methods standard,cutmix,augmix
then: rb-leaderboard rb-demo/results/*.json --allow-mixed
"""


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(",") if v.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rb-demo", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="rb-demo", help="folder for the runs, the corrupted data, results and report")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    ap.add_argument("--epochs", type=int, help="override the recipes' 15 epochs")
    ap.add_argument("--train-limit", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--test-limit", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--corruptions", help="comma-separated subset (default: the 15 benchmark corruptions)")
    ap.add_argument("--severities", default="1,2,3,4,5")
    ap.add_argument("--methods", help="comma-separated training methods, or all (default: standard, mixup, augmix)")
    ap.add_argument("--threads", type=int, help=THREADS_HELP)
    ap.add_argument("--augment-on", choices=["device", "workers"], default="device",
                    help="AugMix batched on the device (default) or per image with PIL")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)  # commands it prints must not be broken
    from .. import demo
    from .._alloc import keep_freed_memory
    from .._common import RBAError
    from .._threads import apply_threads

    keep_freed_memory()  # training and evaluation reuse mapped pages (robustbench_augmix/_alloc.py)

    try:
        cfg = demo.DemoConfig(out=args.out, seeds=_ints(args.seeds), epochs=args.epochs, train_limit=args.train_limit,
                              test_limit=args.test_limit,
                              corruptions=args.corruptions.split(",") if args.corruptions else None,
                              severities=_ints(args.severities), threads=apply_threads(args.threads),
                              batched=args.augment_on == "device", progress=not args.no_progress,
                              methods=demo.METHODS if args.methods is None else demo.all_methods()
                              if args.methods == "all" else tuple(m.strip() for m in args.methods.split(",")
                                                                  if m.strip()))
        res = demo.run(cfg, console)
    except RBAError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; run the same command again to continue (finished steps in {args.out} are kept)")
        return 130
    out = Console()
    out.print(demo.table(demo.summary(res["results"])))
    out.print(res["grid"])
    if "standard" in res["results"]:
        for method in (m for m in res["results"] if m != "standard"):
            d = demo.deltas(res["results"], method)
            n = len(d["mean_corruption_error"])
            lower = sum(v < 0 for v in d["mean_corruption_error"])
            out.print(f"{method} minus standard, per seed (points): mean corruption error "
                      f"{', '.join(f'{v:+.2f}' for v in d['mean_corruption_error'])}; clean error "
                      f"{', '.join(f'{v:+.2f}' for v in d['clean_error'])}. {method} lowered the corruption error "
                      f"in {lower} of {n} seed{'s' if n != 1 else ''}.")
    out.print(f"results: {args.out}/results/*.json   report: {res['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
