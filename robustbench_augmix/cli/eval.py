"""rb-eval: evaluate a classifier on a corruption suite; results as JSON + CSV with full provenance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from .._threads import THREADS_HELP

EXAMPLES = """examples:
  rb-eval --model my_model.py:build --suite cifar10-c --data ~/data/cifar10 --out results/
  rb-eval --checkpoint runs/wrn/model.safetensors --arch timm:resnet18 --num-classes 10 --suite cifar10-c
  rb-eval --model my_model.py:build --suite cifar10-c --source official --data ~/data/CIFAR-10-C
  torchrun --nproc-per-node 4 -m robustbench_augmix.cli.eval --model my_model.py:build --suite imagenet-c \\
      --data /datasets/imagenet/val --device cuda --out results/
"""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rb-eval", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    m = ap.add_argument_group("model")
    m.add_argument("--model", help="a zoo card id (rb-zoo list), a card.toml, or path/to/file.py:factory "
                   "(a callable returning an nn.Module)")
    m.add_argument("--weights", help="weights for a zoo card (default: the torch hub / HF caches, then download)")
    m.add_argument("--checkpoint", help="weights (.safetensors, or a torch state dict); with --arch")
    m.add_argument("--arch", help="builder for --checkpoint: timm:NAME or torchvision:NAME")
    m.add_argument("--num-classes", type=int, help="classes of --arch (default: the suite's dataset)")
    m.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a full-pickle checkpoint (it can run code: only for files you trust)")
    m.add_argument("--mean", help="normalisation mean, e.g. 0.5,0.5,0.5 (default: from the model)")
    m.add_argument("--std", help="normalisation std")
    m.add_argument("--input-size", type=int, help="resize + centre-crop to this size before the model")
    d = ap.add_argument_group("data")
    d.add_argument("--suite", default="cifar10-c")
    d.add_argument("--data", help="clean images (CIFAR pickles folder, ImageFolder tree); with --source official, "
                   "the pre-generated suite. CIFAR is downloaded into the user cache when omitted")
    d.add_argument("--source", choices=["generate", "official"], default="generate",
                   help="corrupt on the fly (default) or read official/pre-generated files")
    d.add_argument("--clean-data", help="clean images for the clean error when --source official")
    d.add_argument("--no-clean", action="store_true", help="skip the clean cell")
    d.add_argument("--corruptions", help="comma-separated (default: the 15 benchmark corruptions)")
    d.add_argument("--extra", action="store_true", help="also the 4 extra corruptions")
    d.add_argument("--severities", default="1,2,3,4,5")
    d.add_argument("--storage-jpeg", choices=["on", "off", "auto"], default="auto",
                   help="JPEG q85 round trip of on-the-fly images as the released files had (auto: ImageFolder suites)")
    d.add_argument("--limit", type=int, help="only the first N images (a quick look; marked not comparable)")
    d.add_argument("--seed", type=int, default=0)
    r = ap.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--chunk-size", type=int, default=2000, help="images per resumable cache unit")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (under torchrun cuda means cuda:LOCAL_RANK)")
    r.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding")
    r.add_argument("--threads", type=int, help=THREADS_HELP)
    r.add_argument("--amp", action="store_true", help="autocast (float16 on CUDA, bfloat16 on CPU)")
    r.add_argument("--channels-last", action="store_true")
    r.add_argument("--out", default="results", help="results folder (JSON, CSV and the resumable cell cache)")
    r.add_argument("--name", help="run name (default: <model>__<suite>)")
    r.add_argument("--baseline", help="results JSON of the model that normalises CE (default: the suite's AlexNet)")
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for the 95%% intervals (0: none)")
    r.add_argument("--calibration-reference-quirk", action="store_true",
                   help="RMS calibration error as the reference code computes it (skips the last bin)")
    r.add_argument("--frost-dir", help="folder with the reference frost textures")
    r.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def _floats(s: str | None, what: str) -> tuple[float, float, float] | None:
    from .._common import InputError

    if s is None:
        return None
    try:
        v = tuple(float(x) for x in s.split(","))
    except ValueError:
        v = ()
    if len(v) == 1:
        v = v * 3
    if len(v) != 3:
        raise InputError(f"--{what} must be one or three comma-separated numbers, got {s!r}")
    return v


def build_model(args, suite):
    """The model, its preprocessing and its provenance from the CLI arguments (:func:`zoo.resolve_model`);
    ``--mean``, ``--std`` and ``--input-size`` override the preprocessing of every kind of model."""
    from ..zoo import resolve_model

    return resolve_model(args.model, suite=suite, weights=args.weights, checkpoint=args.checkpoint, arch=args.arch,
                         num_classes=args.num_classes, trust=args.trust_checkpoint, mean=_floats(args.mean, "mean"),
                         std=_floats(args.std, "std"), input_size=args.input_size)


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)

    def fail(msg: str) -> int:
        console.print(f"[bold red]rb-eval:[/] {msg}")
        return 2

    import torch.distributed as dist

    from .._alloc import keep_freed_memory
    from .._common import RBAError, check_device, init_distributed, storage_errors
    from .._threads import apply_threads
    from ..corruptions import load_suite, set_frost_dir
    from ..evaluation import Config, Evaluation
    from ..zoo import model_classes

    keep_freed_memory()  # activations and kernels reuse mapped pages (robustbench_augmix/_alloc.py)
    try:
        apply_threads(args.threads)
    except RBAError as e:
        return fail(str(e))
    if args.frost_dir:
        set_frost_dir(args.frost_dir)
    try:
        check_device(args.device)
    except RBAError as e:
        return fail(str(e))
    device, created_group = init_distributed(args.device)
    try:
        suite = load_suite(args.suite)
        severities = [int(s) for s in args.severities.split(",") if s.strip()]
        model, pre, info = build_model(args, suite)
        cfg = Config(
            suite=suite.id, data=args.data, source=args.source, clean_data=args.clean_data,
            corruptions=[c.strip() for c in args.corruptions.split(",") if c.strip()] if args.corruptions else None,
            extra=args.extra, severities=severities, clean=not args.no_clean, batch_size=args.batch_size,
            chunk_size=args.chunk_size, device=device, workers=args.workers, amp=args.amp,
            channels_last=args.channels_last, limit=args.limit, seed=args.seed,
            storage_jpeg={"on": True, "off": False, "auto": None}[args.storage_jpeg], out=args.out, name=args.name,
            n_boot=args.bootstrap, calibration_reference_quirk=args.calibration_reference_quirk,
            baseline=args.baseline, progress=not args.no_progress, classes=model_classes(info),
            extra_provenance={"command": " ".join(["rb-eval", *(argv if argv is not None else sys.argv[1:])])},
        )
        built: list = []
        with storage_errors(args.out, lambda: built[0].space_needed() if built else None):
            built.append(ev := Evaluation(model, cfg, pre, info))
            res = ev.run()
    except RBAError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished chunks are cached; run the same command to resume")
        return 130
    finally:
        if created_group and dist.is_initialized():
            dist.destroy_process_group()
    if ev.rank == 0:
        console.print(res.table())
        path = Path(args.out) / f"{ev.name}.json"
        console.print(f"results: {path} and {path.with_suffix('.csv')}")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
