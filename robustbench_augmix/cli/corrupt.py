"""rb-corrupt: generate a corrupted suite in the official layouts, or a gallery picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._threads import THREADS_HELP

EXAMPLES = """examples:
  rb-corrupt --gallery gallery.png                       # every corruption x severity on a sample photo
  rb-corrupt --suite cifar10-c --data ~/data/cifar10 --out ~/data/CIFAR-10-C
  rb-corrupt --suite imagenet-c --data /datasets/imagenet/val --out /datasets/ImageNet-C --shard 0/4
  rb-corrupt --suite cifar10-p --data ~/data/cifar10 --out ~/data/CIFAR-10-P   # the -P sequences generated here
  rb-corrupt --suite imagenet-p --gallery p.png          # 8 frames of every perturbation on a sample photo
"""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rb-corrupt", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="imagenet-c", help="suite table (see --list)")
    ap.add_argument("--data", help="clean source: the folder holding cifar-10-batches-py/ or cifar-100-python/, "
                    "or an ImageFolder tree root/<class>/<image>")
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--corruptions", "--perturbations", dest="corruptions",
                    help="comma-separated names (default: the 15 benchmark ones; -P: every generated perturbation)")
    ap.add_argument("--extra", action="store_true", help="also the 4 extra corruptions")
    ap.add_argument("--severities", default="1,2,3,4,5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", "--workers", dest="threads", type=int, default=None,
                    help=THREADS_HELP)
    ap.add_argument("--shard", default=None, help="i/n: this process does part i of n, counted from 0 (0/4, 1/4, 2/4, "
                    "3/4; default: torchrun's rank)")
    ap.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                    help="a source image that cannot be read: stop (default) or skip it and report it")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clean images")
    ap.add_argument("--allow-existing", action="store_true",
                    help="write into an --out that holds files this tool did not write (default: refuse and list "
                         "them); files at the paths it writes are then replaced")
    ap.add_argument("--frost-dir", help="folder with the reference frost textures frost1.png ... frost6.jpg")
    ap.add_argument("--gallery", metavar="PNG", help="write one picture of every corruption x severity and exit")
    ap.add_argument("--image", help="the image for --gallery (default: a sample photograph from scikit-learn)")
    ap.add_argument("--list", action="store_true", help="list suites and corruptions and exit")
    return ap.parse_args(argv)


def _fail(console: Console, msg: str) -> int:
    console.print(f"[bold red]rb-corrupt:[/] {msg}")
    return 2


def _shard(spec: str | None) -> tuple[int, int]:
    from .._common import InputError

    if spec is None:
        from .._common import dist_info

        rank, world, _ = dist_info()
        return rank, world
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {spec}: parts are counted from 0, so i/n needs 0 <= i < n (the 4 parts of 4 are "
                         "0/4, 1/4, 2/4 and 3/4)")
    return i, n


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)

    # Before anything that imports torch: the suite tables alone answer at once.
    if args.list:
        t = Table(title="suites")
        for c in ("suite", "size", "layout", "corruptions (extra in brackets)"):
            t.add_column(c)
        from ..corruptions import load_suite, suites

        for sid in suites():
            s = load_suite(sid)
            t.add_row(sid, str(s.image_size), s.layout,
                      # escaped: rich would read "[speckle_noise]" as markup and print nothing
                      escape(", ".join(n if not s.corruptions[n].extra else f"[{n}]" for n in s.names(extra=True))))
        from ..perturbations import load_psuite, psuites

        for sid in psuites():
            s = load_psuite(sid)
            t.add_row(sid, str(s.image_size), s.layout, escape(
                ", ".join(n if s.perturbations[n].kernel else f"({n})" for n in s.names("all"))))
        Console().print(t)
        console.print("-P suites: perturbations in parentheses are listed in the table but not generated yet")
        return 0

    from .._alloc import keep_freed_memory
    from .._common import RBAError, check_device
    from .._threads import apply_threads
    from ..corruptions import load_suite, set_frost_dir

    keep_freed_memory()  # reuse the kernels' temporaries' pages (robustbench_augmix/_alloc.py)
    try:
        apply_threads(args.threads)
    except RBAError as e:
        return _fail(console, str(e))
    if args.frost_dir:
        set_frost_dir(args.frost_dir)
    from ..perturbations import load_psuite, psuites

    sequences = args.suite in psuites()
    try:
        suite = load_psuite(args.suite) if sequences else load_suite(args.suite)
    except RBAError as e:
        return _fail(console, str(e))
    if sequences and args.gallery:
        from PIL import Image

        from ..gallery import make_sequence_gallery

        try:
            img = Image.open(args.image) if args.image else None
        except OSError as e:
            return _fail(console, f"--image {args.image}: cannot read it ({e})")
        pic = make_sequence_gallery(img, suite=suite.id, seed=args.seed)
        pic.save(args.gallery)
        print(f"wrote {args.gallery}: {suite.name}, {pic.size[0]}x{pic.size[1]} px, 8 frames of each perturbation "
              f"(seed {args.seed})")
        return 0

    if args.gallery:
        from PIL import Image

        from ..gallery import harsher_earlier, make_gallery

        try:
            img = Image.open(args.image) if args.image else None
        except OSError as e:
            return _fail(console, f"--image {args.image}: cannot read it ({e})")
        pic, notes = make_gallery(img, suite=suite.id, seed=args.seed)
        pic.save(args.gallery)
        for n in notes:
            console.print(f"[yellow]left out[/] {escape(n)}")
        for n in harsher_earlier(suite):       # also the picture's caption
            console.print(f"[dim]faithful:[/] {escape(n)}")
        print(f"wrote {args.gallery}: {suite.name}, {pic.size[0]}x{pic.size[1]} px, "
              f"clean + severities 1-5 for each corruption (seed {args.seed})")
        return 0

    if not args.data or not args.out:
        return _fail(console, "give --data (the clean source) and --out (where to write), or --gallery PNG")
    if sequences:
        return _sequences(args, suite, console)
    names = [n.strip() for n in args.corruptions.split(",")] if args.corruptions else suite.names(extra=args.extra)
    try:
        sevs = [int(v) for v in args.severities.split(",")]
        if not sevs or any(v not in (1, 2, 3, 4, 5) for v in sevs):
            raise ValueError
    except ValueError:
        return _fail(console, f"--severities must be comma-separated integers in 1..5, got {args.severities!r}")

    from ..generate import Generator, Plan

    try:
        check_device(args.device)
        plan = Plan(suite=suite.id, data=args.data, out=args.out, corruptions=names, severities=sevs,
                    seed=args.seed, batch_size=args.batch_size, device=args.device, shard=_shard(args.shard),
                    on_error=args.on_error, limit=args.limit, allow_existing=args.allow_existing)
        gen = Generator(plan)
    except RBAError as e:
        return _fail(console, str(e))
    return _run(gen, plan, args, suite, console)


def _sequences(args, suite, console: Console) -> int:
    """The -P path: one file per perturbation (and per noise difficulty), as the release has them."""
    from .._common import RBAError, check_device
    from ..generate import Plan, SequenceGenerator

    try:
        names = [n.strip() for n in args.corruptions.split(",")] if args.corruptions else None
        for n in names or ():
            from ..perturbations import check_perturbation

            check_perturbation(n, suite)
        check_device(args.device)
        plan = Plan(suite=suite.id, data=args.data, out=args.out, corruptions=suite.release_stems(names),
                    severities=(1,), seed=args.seed, batch_size=args.batch_size, device=args.device,
                    shard=_shard(args.shard), on_error=args.on_error, limit=args.limit,
                    allow_existing=args.allow_existing)
        gen = SequenceGenerator(plan)
    except RBAError as e:
        return _fail(console, str(e))
    return _run(gen, plan, args, suite, console)


def _run(gen, plan, args, suite, console: Console) -> int:
    from .._common import Rate, RBAError, progress_bar, storage_errors

    try:
        with storage_errors(args.out, gen.space_needed), progress_bar(True, console=console) as prog:
            task = prog.add_task(f"[bold]{suite.id} {plan.shard[0]}/{plan.shard[1]}", total=gen.total_images(),
                                 info="")
            rate = Rate()

            def tick(n: int) -> None:
                prog.update(task, advance=n, info=rate(prog.tasks[task].completed))

            gen.progress = tick
            summary = gen.run()
    except RBAError as e:
        return _fail(console, str(e))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished files are kept; run the same command again to resume")
        return 130

    t = Table(title=f"rb-corrupt {suite.id} -> {Path(args.out)}")
    for c in ("units run", "already done", "seconds", "skipped images", "manifest"):
        t.add_column(c)
    t.add_row(str(summary["units_run"]), str(summary["units_already_done"]), f"{summary['seconds']:.1f}",
              str(len(summary["skipped_images"])), summary["manifest"] or "(other shards still running)")
    Console().print(t)
    for s in summary["skipped_images"]:
        console.print(f"[yellow]skipped[/] {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
