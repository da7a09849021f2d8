"""rb-bench: throughput on this hardware, ours against the reference, side by side in one run."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._threads import THREADS_HELP


def _table(rows, md: bool):
    sizes = sorted({r["size"] for r in rows}, reverse=True)
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    get = {(r["corruption"], r["size"]): r for r in rows}
    head = ["corruption"] + [f"{k} @{s}" for s in sizes for k in ("ref ms/img", "ours ms/img", "speed-up")]
    body = []
    for n in names:
        line = [n + (" (extra)" if get[(n, sizes[0])]["extra"] else "")]
        for s in sizes:
            r = get[(n, s)]
            ref = r["reference_ms"]
            line += [f"{ref:.3f}" if ref is not None else "-", f"{r['ours_ms']:.3f}",
                     f"{ref / r['ours_ms']:.1f}x" if ref is not None else "-"]
        body.append(line)
    foot = [f"{sum(not get[(n, sizes[0])]['extra'] for n in names)} benchmark corruptions (sum)"]
    for s in sizes if any(not get[(n, sizes[0])]["extra"] for n in names) else []:
        sel = [get[(n, s)] for n in names if not get[(n, s)]["extra"]]
        o = sum(r["ours_ms"] for r in sel)
        if all(r["reference_ms"] is not None for r in sel):
            t = sum(r["reference_ms"] for r in sel)
            foot += [f"{t:.2f}", f"{o:.2f}", f"{t / o:.1f}x"]
        else:
            foot += ["-", f"{o:.2f}", "-"]
    if len(foot) > 1:
        body.append(foot)
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(out)
    # On a terminal, one table per size: 4 columns fit 80 (a pipe's width) with every id and number whole.
    from rich.console import Group

    tables = []
    for k, s in enumerate(sizes):
        t = Table(title=f"corruption throughput at {s} px: ms per image (lower is better); speed-up = reference / "
                        "ours")
        t.add_column("corruption", overflow="fold")
        for h in ("reference", "ours", "speed-up"):
            t.add_column(h, justify="right", no_wrap=True)
        for line in body:
            t.add_row(escape(line[0]), *line[1 + 3 * k:4 + 3 * k])
        tables.append(t)
    return Group(*tables)


def _ms(v) -> str:
    """Four significant digits, no exponent: seven columns of times fit 80."""
    return "-" if v is None else f"{v:.{3 if v < 10 else 2 if v < 100 else 1 if v < 1000 else 0}f}"


def _contention_table(rows, md: bool):
    busy, threads = rows[0]["busy"], rows[0]["threads"]
    head = ["corruption", "ours quiet ms", "ours busy ms", "ours slower", "ref quiet ms", "ref busy ms", "ref slower"]
    x = lambda v: "-" if v is None else f"{v:.1f}x"  # noqa: E731
    body = [[r["corruption"] + (" (extra)" if r["extra"] else ""), _ms(r["ours_quiet_ms"]), _ms(r["ours_busy_ms"]),
             x(r["ours_slowdown"]), _ms(r["reference_quiet_ms"]), _ms(r["reference_busy_ms"]),
             x(r["reference_slowdown"])] for r in rows]
    sel = [r for r in rows if not r["extra"]]
    if sel:
        tot = {k: sum(r[k] for r in sel) if all(r[k] is not None for r in sel) else None
               for k in ("ours_quiet_ms", "ours_busy_ms", "reference_quiet_ms", "reference_busy_ms")}
        ratio = lambda a, b: None if tot[a] is None else tot[a] / tot[b]  # noqa: E731
        body.append([f"sum of the {len(sel)}", _ms(tot["ours_quiet_ms"]), _ms(tot["ours_busy_ms"]),
                     x(ratio("ours_busy_ms", "ours_quiet_ms")), _ms(tot["reference_quiet_ms"]),
                     _ms(tot["reference_busy_ms"]), x(ratio("reference_busy_ms", "reference_quiet_ms"))])
    title = (f"shared cores at {rows[0]['size']} px: ms per image quiet and beside {busy} busy process"
             f"{'es' if busy != 1 else ''} (ours: {threads} threads; reference: 1)")
    if md:
        out = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in body])
    t = Table(title=escape(title))
    for h in head:
        t.add_column(h, justify="left" if h == "corruption" else "right", no_wrap=h == "corruption")
    for line in body:
        t.add_row(*line)
    return t


def _startup_table(rows, md: bool):
    head = ["command", "wall s (median)", "wall s (slowest)", "imports torch"]
    body = [[r["command"], f"{r['wall_s']:.3f}", f"{r['wall_max_s']:.3f}", "yes" if r["imports_torch"] else "no"]
            for r in rows]
    title = f"startup: a fresh interpreter per run, {rows[0]['runs']} runs each"
    if md:
        out = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---|---:|---:|---|"]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in body])
    t = Table(title=escape(title))
    for h in head:
        t.add_column(h, justify="left" if h in ("command", "imports torch") else "right", no_wrap=h == "command")
    for line in body:
        t.add_row(*line)
    return t


def _emit(args, raw, table) -> int:
    """Write the raw rows to --json when asked, print the table (Markdown or rich)."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    print(table) if args.markdown else Console().print(table)
    return 0


def _eval_table(res: dict, md: bool):
    # rich wraps these heads at their spaces at 80 columns; ids and numbers stay whole
    head = ["corruption", "inference ms/img", "on the fly ms/img", "overhead", "corrupt only ms/img",
            "corrupt / infer."]
    body = [[r["corruption"], f"{r['inference_ms']:.3f}", f"{r['on_the_fly_ms']:.3f}", f"{100 * r['overhead']:+.0f}%",
             f"{r['corrupt_ms']:.3f}", f"{100 * r['corrupt_ms'] / r['inference_ms']:.0f}%"] for r in res["rows"]]
    body.append([f"mean over {len(res['rows'])}", f"{res['inference_ms']:.3f}", f"{res['on_the_fly_ms']:.3f}",
                 f"{100 * res['overhead']:+.0f}%", f"{res['corrupt_ms']:.3f}", f"{100 * res['corrupt_share']:.0f}%"])
    if md:
        out = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|"]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in body])
    t = Table(title=escape(f"rb-eval on the fly vs inference only: {res['model']} on {res['suite']} "
                           f"({res['device']}, batch {res['batch']}, severity {res['severity']})"))
    for h in head:
        t.add_column(h, justify="left" if h == "corruption" else "right", no_wrap=h == "corruption")
    for line in body:
        t.add_row(*line)
    return t


def _main_eval(args, err: Console) -> int:
    from .._common import RBAError
    from ..bench import bench_eval
    from ..corruptions import load_suite
    from ..zoo import resolve_model

    try:
        suite = load_suite(args.suite)
        # Random weights: the benchmark times the model, whatever it has learnt.
        model, pre, _ = resolve_model(arch=args.model, suite=suite, random_weights=True)
    except RBAError as e:
        err.print(f"[red]rb-bench:[/] {e}")
        return 2
    res = bench_eval(model, suite.id, preprocess=pre, images=args.images, batch=args.batch or 128,
                     device=args.device, names=args.corruptions.split(",") if args.corruptions else None,
                     amp=args.amp, channels_last=args.channels_last, min_time=args.min_time,
                     log=lambda r: err.print(f"[dim]{r['corruption']}: inference {r['inference_ms']:.3f} ms, "
                                             f"on the fly {r['on_the_fly_ms']:.3f} ms[/]"))
    res["model"] = args.model
    return _emit(args, res, _eval_table(res, args.markdown))


def _train_table(res: dict, md: bool):
    rows = [("per-image path (Pillow, one process)", f"{res['per_image_ms']:.3f}", f"{1e3 / res['per_image_ms']:.0f}"),
            ("batched path: draws + crop on the host", f"{res['batched_host_ms']:.3f}", "-"),
            ("batched path: pixels on the device", f"{res['batched_device_ms']:.3f}", "-"),
            ("batched path, total", f"{res['batched_ms']:.3f}", f"{1e3 / res['batched_ms']:.0f}"),
            (f"JSD training step of {res['arch']} (3 views)", f"{res['step_ms']:.3f}", f"{1e3 / res['step_ms']:.0f}")]
    foot = [f"batched / per-image speed-up: {res['speedup']:.1f}x",
            f"augmentation share of step time (device part): {100 * res['aug_share_of_step']:.1f}%",
            f"with the host part in the same process: {100 * res['aug_share_of_step_with_host']:.1f}%"]
    title = (f"AugMix throughput, {res['size']} px, batch {res['batch']}, severity {res['severity']:g}, "
             f"{res['device']}, {res['threads']} threads")
    if md:
        out = [f"**{title}**", "", "| | ms / image | images / s |", "|---|---:|---:|"]
        return "\n".join(out + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""] + [f"- {f}" for f in foot])
    t = Table(title=escape(title), caption="\n".join(foot))
    for h in ("", "ms / image", "images / s"):
        t.add_column(h, justify="left" if not h else "right")
    for r in rows:
        t.add_row(*r)
    return t


def _main_train(args, err: Console) -> int:
    from .._common import RBAError
    from ..bench import bench_train

    try:
        # default batch: the CIFAR recipes' 128 (recipes.toml, cifar.py l.60-77)
        res = bench_train(arch=args.model, size=int(args.sizes.split(",")[-1]), batch=args.batch or 128,
                          device=args.device, amp=args.amp, channels_last=args.channels_last,
                          min_time=args.min_time,
                          log=lambda r: err.print(f"[dim]round {r['round']}: per-image {r['per_image']:.3f} ms, "
                                                  f"host {r['host']:.3f} ms, device {r['device']:.3f} ms, "
                                                  f"step {r['step']:.3f} ms[/]"))
    except RBAError as e:
        err.print(f"[red]rb-bench:[/] {e}")
        return 2
    return _emit(args, res, _train_table(res, args.markdown))


def _methods_table(res: dict, md: bool):
    head = ["method", "aug. ms / image", "step ms / image", "aug. share", "x standard step"]
    rows = [("standard data path (crop/flip, normalise)", f"{res['base_ms']:.3f}", f"{res['step_ms']:.3f}", "-",
             "1.00")]
    rows += [(r["method"], f"{r['cost_ms']:.3f}", f"{r['step_ms']:.3f}", f"{100 * r['share']:.1f}%",
              f"{r['step_multiple']:.2f}") for r in res["rows"]]
    title = (f"Training methods on {res['arch']}, {res['size']} px, batch {res['batch']}, {res['device']}, "
             f"{res['threads']} threads")
    foot = ("aug.: what the method adds to the standard data path (policy, extra views or batch operation; PGD: "
            "its attack passes); step: forward, loss, backward and SGD on the views it trains with; share: aug. / "
            "(aug. + step)")
    if md:
        out = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows] + ["", foot])
    t = Table(title=escape(title), caption=escape(foot))
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
    for r in rows:
        t.add_row(*map(escape, r))
    return t


def _main_methods(args, err: Console) -> int:
    from .._common import RBAError
    from ..baselines import get_method
    from ..bench import bench_methods

    try:
        names = args.methods.split(",") if args.methods else None
        for n in names or ():
            get_method(n)
        res = bench_methods(arch=args.model, size=int(args.sizes.split(",")[-1]), batch=args.batch or 128,
                            device=args.device, methods=names, min_time=args.min_time,
                            log=lambda r: err.print(f"[dim]{r['method']}: aug. {r['cost_ms']:.3f} ms, "
                                                    f"step {r['step_ms']:.3f} ms per image[/]"))
    except RBAError as e:
        err.print(f"[red]rb-bench:[/] {e}")
        return 2
    return _emit(args, res, _methods_table(res, args.markdown))


def _perturbations_table(rows: list[dict], md: bool):
    head = ["perturbation", "frames", "reference ms/seq", "ours ms/seq", "speed-up"]
    body = [[r["perturbation"], str(r["frames"]), f"{r['reference_ms']:.2f}", f"{r['ours_ms']:.3f}",
             f"{r['speedup']:.1f}x"] for r in rows]
    title = f"-P generation, {rows[0]['suite'] if rows else ''}: ms per sequence (ours batched; the script's loop)"
    if md:
        return "\n".join([f"**{title}**", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * 4]
                         + ["| " + " | ".join(r) + " |" for r in body])
    t = Table(title=escape(title))
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in body:
        t.add_row(*r)
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rb-bench", description=__doc__,
                                 epilog="examples:\n  rb-bench corruptions --sizes 224,32\n"
                                        "  rb-bench eval --model cifar:wrn40_2 --suite cifar10-c\n"
                                        "  rb-bench eval --model torchvision:resnet50 --suite imagenet-c "
                                        "--device cuda\n"
                                        "  rb-bench train --model cifar:wrn40_2 --sizes 32 --device cuda --amp\n"
                                        "  rb-bench methods --model cifar:wrn40_2 --sizes 32\n"
                                        "  rb-bench perturbations --suite cifar10-p\n"
                                        "  rb-bench startup --runs 5",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["corruptions", "eval", "train", "methods", "perturbations", "contention",
                                     "startup"], nargs="?",
                    default="corruptions")
    ap.add_argument("--runs", type=int, default=5, help="startup: fresh interpreters per command")
    ap.add_argument("--busy", type=int, help="contention: busy processes to start (default: one per available core)")
    ap.add_argument("--model", default="cifar:wrn40_2", help="eval, train: builder (cifar:, timm:, torchvision:)")
    ap.add_argument("--suite", default="cifar10-c", help="eval: suite")
    ap.add_argument("--images", type=int, default=256, help="eval: images per measurement")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--sizes", default="224,32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--corruptions", default=None, help="comma-separated subset")
    ap.add_argument("--methods", default=None, help="methods: comma-separated subset of the training methods")
    ap.add_argument("--io", choices=("uint8", "float"), default="uint8",
                    help="corruptions: time ours uint8 in/out like the reference and rb-corrupt (default), "
                         "or float [0, 1] in/out as on a model's device")
    ap.add_argument("--no-reference", action="store_true", help="time ours only (no imagecorruptions needed)")
    ap.add_argument("--threads", type=int, help=THREADS_HELP)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--json", help="write the raw rows here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    err = Console(stderr=True)
    from .._alloc import keep_freed_memory

    keep_freed_memory()  # as rb-corrupt, rb-eval and rb-train run
    from .._common import RBAError, check_device
    from .._threads import apply_threads

    try:
        check_device(args.device)
        apply_threads(args.threads)
    except RBAError as e:
        err.print(f"[red]rb-bench:[/] {e}")
        return 2
    if args.what == "eval":
        return _main_eval(args, err)
    if args.what == "train":
        return _main_train(args, err)
    if args.what == "methods":
        return _main_methods(args, err)
    if args.what == "perturbations":
        from ..bench import bench_perturbations

        try:
            rows = bench_perturbations(suite=args.suite if args.suite.endswith("-p") else "cifar10-p",
                                       images=args.images if args.images != 256 else 64,
                                       names=args.corruptions.split(",") if args.corruptions else None,
                                       min_time=args.min_time,
                                       log=lambda r: err.print(f"[dim]{r['perturbation']}: ours {r['ours_ms']:.3f}, "
                                                               f"reference {r['reference_ms']:.2f} ms/seq[/]"))
        except (RBAError, ImportError) as e:
            err.print(f"[red]rb-bench:[/] {e}")
            return 2
        return _emit(args, rows, _perturbations_table(rows, args.markdown))
    if args.what == "startup":
        from ..bench import bench_startup

        rows = bench_startup(runs=args.runs, log=lambda r: None)
        return _emit(args, rows, _startup_table(rows, args.markdown))
    if args.what == "contention":
        from ..bench import bench_contention

        try:
            rows = bench_contention(size=int(args.sizes.split(",")[0]), busy=args.busy,
                                    names=args.corruptions.split(",") if args.corruptions else None,
                                    batch=args.batch, reference=not args.no_reference, min_time=args.min_time,
                                    io=args.io, log=lambda r: err.print(
                                        f"[dim]{r['corruption']}: ours {r['ours_slowdown']:.1f}x slower busy[/]"))
        except ImportError as e:
            err.print(f"[red]rb-bench:[/] {e} (or pass --no-reference)")
            return 2
        return _emit(args, rows, _contention_table(rows, args.markdown))
    from ..bench import bench_corruptions

    try:
        rows = bench_corruptions(sizes=[int(s) for s in args.sizes.split(",")], device=args.device,
                                 names=args.corruptions.split(",") if args.corruptions else None,
                                 batch=args.batch, reference=not args.no_reference, min_time=args.min_time,
                                 io=args.io,
                                 log=lambda r: err.print(f"[dim]{r['corruption']} @{r['size']}: ours "
                                                         f"{r['ours_ms']:.3f} ms, ref {r['reference_ms']}[/]"))
    except ImportError as e:
        err.print(f"[red]rb-bench:[/] {e} (or pass --no-reference)")
        return 2
    return _emit(args, rows, _table(rows, args.markdown))


if __name__ == "__main__":
    sys.exit(main())
