"""rb-train: train a model with a recipe (AugMix + JSD by default), resumably; writes a safetensors model
and a card.toml that rb-eval and rb-leaderboard read."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from .._threads import THREADS_HELP

EXAMPLES = """examples:
  rb-train --list
  rb-train --recipe cifar10-wrn40_2-augmix --out runs/wrn                    # CIFAR-10 found or downloaded
  rb-train --recipe cifar10-wrn40_2-augmix --out runs/wrn --resume            # continue after a stop
  rb-train --recipe cifar10-wrn40_2-cutmix --out runs/wrn-cutmix            # one cell of the paper's Table 1
  rb-train --recipe cifar10-wrn40_2-augmix --no-jsd --out runs/wrn-nojsd      # the paper's ablation
  rb-train --recipe cifar10-wrn40_2-augmix --no-augmix --no-jsd --out runs/wrn-std   # the standard baseline
  rb-train --recipe cifar10-wrn40_2-augmix --device cuda --amp --channels-last --out runs/wrn --eval
  torchrun --nproc-per-node 4 -m robustbench_augmix.cli.train --recipe imagenet-resnet50-augmix \\
      --data /datasets/imagenet/train --device cuda --amp --workers 8 --out runs/rn50
then: rb-eval --model runs/wrn/card.toml --suite cifar10-c
"""

# Recipe fields settable from the command line, with their types.
OVERRIDES = {"epochs": int, "batch_size": int, "lr": float, "lr_min": float, "weight_decay": float,
             "momentum": float, "severity": float, "width": int, "depth": int, "alpha": float,
             "jsd_lambda": float, "arch": str, "schedule": str, "transform": str, "eval_suite": str, "method": str}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rb-train", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", help="recipe name (--list shows them)")
    ap.add_argument("--list", action="store_true", help="list the recipes and exit")
    ap.add_argument("--out", help="run folder: checkpoint.pt, log.csv, model.safetensors, card.toml")
    ap.add_argument("--data", help="training data (CIFAR pickles folder; ImageFolder train tree for ImageNet). "
                    "CIFAR is downloaded into the user cache when omitted")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    r = ap.add_argument_group("recipe overrides")
    for k, t in OVERRIDES.items():
        r.add_argument("--" + k.replace("_", "-"), type=t, dest=k)
    r.add_argument("--no-jsd", action="store_true", help="plain cross-entropy on one AugMix view")
    r.add_argument("--no-augmix", action="store_true", help="no AugMix (with --no-jsd: the standard baseline)")
    r.add_argument("--all-ops", action="store_true", help="add color/contrast/brightness/sharpness "
                   "(they overlap with the test corruptions; off in the paper)")
    x = ap.add_argument_group("run")
    x.add_argument("--device", default="cpu", help="cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    x.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    x.add_argument("--threads", type=int, help=THREADS_HELP)
    x.add_argument("--amp", action="store_true",
                   help="mixed precision (float16 + loss scaling on CUDA, bfloat16 on CPU)")
    x.add_argument("--channels-last", action="store_true")
    x.add_argument("--augment-on", choices=["auto", "device", "workers"], default="auto",
                   help="AugMix on the training device, batched (default on CUDA), or per image in the workers")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--limit", type=int, help="only the first N training images (a smoke test)")
    x.add_argument("--eval", action="store_true", help="evaluate the trained model on the recipe's suite at the end")
    x.add_argument("--eval-data", help="clean test data for --eval (default: as rb-eval finds it)")
    x.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def eval_hint(recipe, out: str) -> str:
    """An rb-eval command that accepts this run. A digits model has no suite of its own: it is scored on the
    digits test split corrupted with the CIFAR-10-C tables, which rb-demo writes (rb-demo/DIGITS-C, clean
    split in rb-demo/data), through its checkpoint (a digits card is refused on cifar10-c)."""
    if recipe.dataset == "digits":
        ms = lambda v: ",".join(f"{x:g}" for x in v)  # noqa: E731
        return (f"rb-eval --checkpoint {os.path.join(out, 'model.safetensors')} --arch {recipe.arch} --mean "
                f"{ms(recipe.mean)} --std {ms(recipe.std)} --suite {recipe.eval_suite} --source official --data "
                "rb-demo/DIGITS-C --clean-data rb-demo/data (both written by rb-demo)")
    return f"rb-eval --model {os.path.join(out, 'card.toml')} --suite {recipe.eval_suite}"


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)  # commands it prints must not be broken
    if args.list:  # the recipe table only: no torch
        from ..recipes import load_recipe, recipes

        for name in recipes():
            r = load_recipe(name)
            print(f"{name:34s} {r.arch:26s} {r.text}")
        return 0
    from .. import train as T
    from .._alloc import keep_freed_memory
    from .._common import RBAError, check_device, storage_errors
    from .._threads import apply_threads

    keep_freed_memory()  # activations reuse mapped pages (robustbench_augmix/_alloc.py)

    if not args.recipe or not args.out:
        console.print("[red]error:[/] rb-train needs --recipe NAME (rb-train --list) and --out FOLDER")
        return 2
    try:
        overrides = {k: getattr(args, k) for k in OVERRIDES}
        if args.no_jsd:
            overrides["jsd"] = False
        if args.no_augmix:
            overrides["augmix"] = False
            if not args.no_jsd:
                overrides["jsd"] = False
        if args.all_ops:
            overrides["all_ops"] = True
        recipe = T.load_recipe(args.recipe, **overrides)
        cfg = T.TrainConfig(out=args.out, data=args.data, device=args.device, workers=args.workers, amp=args.amp,
                            channels_last=args.channels_last, seed=args.seed, resume=args.resume,
                            batched={"auto": None, "device": True, "workers": False}[args.augment_on],
                            progress=not args.no_progress, limit=args.limit, threads=apply_threads(args.threads))
        built: list = []
        check_device(args.device)
        with storage_errors(args.out, lambda: built[0].space_needed() if built else None):
            built.append(trainer := T.Trainer(recipe, cfg))
            row = trainer.fit()
    except RBAError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; the last finished epoch is saved: rb-train --recipe {args.recipe} "
                      f"--out {args.out} --resume continues")
        return 130
    if trainer.rank != 0:
        return 0
    card = os.path.join(args.out, "card.toml")
    console.print(f"done: {args.out}/model.safetensors and {card}"
                  + (f"; test error {100 * row['test_error']:.2f}%" if row.get("test_error") is not None else ""))
    if args.eval:
        from ..evaluation import evaluate
        from ..zoo import model_classes, resolve_model

        data = args.eval_data or (args.data if recipe.dataset.startswith("cifar") else None)
        try:
            model, pre, info = resolve_model(card, suite=recipe.eval_suite)
            res = evaluate(model, recipe.eval_suite, data, preprocess=pre, model_info=info, device=args.device,
                           out=os.path.join(args.out, "results"), progress=not args.no_progress,
                           classes=model_classes(info))
        except RBAError as e:
            console.print(f"[red]error:[/] {e}")
            return 2
        Console().print(res.table())
        print(res.path)
        return 0
    console.print(f"evaluate it: {eval_hint(recipe, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
