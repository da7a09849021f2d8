"""Throughput benchmarks, measured side by side in one run on this machine."""

from __future__ import annotations

import contextlib
import itertools
import time

import numpy as np
import torch

from ._common import InputError
from .corruptions import apply, load_suite
from .corruptions._rng import image_seed


def _photos(size: int, n: int) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    pics = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out = []
    for i in range(n):
        a = pics[i % 2]
        h, w = a.shape[:2]
        s = min(h, w)
        off = (i * 7) % (w - s + 1)
        out.append(np.asarray(Image.fromarray(a[:, off : off + s]).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


def _timeit(fn, min_time: float, min_calls: int = 2, max_calls: int = 200) -> float:
    fn()  # warm-up (caches, tables)
    t0, calls = time.perf_counter(), 0
    while calls < min_calls or (time.perf_counter() - t0 < min_time and calls < max_calls):
        fn()
        calls += 1
    return (time.perf_counter() - t0) / calls


def bench_corruptions(sizes=(224, 32), severities=(1, 3, 5), suite="imagenet-c", names=None,
                      batch=None, device="cpu", reference=True, min_time=0.3, io="uint8", log=print) -> list[dict]:
    """ms per image for each corruption: ours batched vs the reference package per image.

    Both use the ImageNet-C table at every size (the reference package has only that table), on the
    same photographs. The reference runs single-threaded per image as its API does (uint8 image in,
    uint8 image out); ours runs batched with torch's default threads, by default on the same terms:
    uint8 (N, 3, H, W) in and out, as ``rb-corrupt`` runs it (``io="float"``: float [0, 1] in and out,
    as :func:`apply` does on a model's device).
    """
    if io not in ("uint8", "float"):
        raise InputError(f"io must be 'uint8' or 'float', got {io!r}")
    ref = None
    if reference:
        from ._reference import load_reference

        ref = load_reference()
    s = load_suite(suite)
    names = names or s.names(extra=True)
    rows = []
    for size in sizes:
        b = batch or (64 if size >= 128 else 512)
        imgs = _photos(size, b)
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(device)
        if io == "float":
            x = x.float().div(255)
        for name in names:
            ours = 0.0
            for sev in severities:
                seeds = [image_seed(0, suite, name, sev, i) for i in range(b)]

                def run(sev=sev, seeds=seeds, x=x, name=name):
                    apply(x, name, sev, suite=suite, seeds=seeds, levels=io == "uint8")
                    if device != "cpu":
                        torch.cuda.synchronize()

                ours += _timeit(run, min_time) / b
            ours /= len(severities)
            theirs = None
            if ref is not None:
                theirs = 0.0
                for sev in severities:
                    # The reference goes through the same photographs, one per call: JPEG's and spatter's
                    # cost depends on the content.
                    turn = itertools.cycle(imgs)
                    theirs += _timeit(lambda sev=sev, turn=turn, name=name: ref.corrupt(
                        next(turn), severity=sev, corruption_name=name),
                                      min_time, min_calls=1, max_calls=100)
                theirs /= len(severities)
            row = {"corruption": name, "size": size, "extra": s.corruptions[name].extra, "io": io,
                   "ours_ms": ours * 1e3, "reference_ms": None if theirs is None else theirs * 1e3}
            rows.append(row)
            log(row)
    return rows


_SPIN = "while True: pass"  # one busy process: a core's worth of work with no end


def bench_contention(size: int = 224, busy: int | None = None, severities=(3,), names=None, batch=None,
                     reference=True, min_time=0.3, io="uint8", log=print) -> list[dict]:
    """Each corruption timed quiet, then beside ``busy`` single-threaded busy processes (default: one per
    available core) that this function starts and stops itself; ours (with the current torch threads) and
    the reference side by side. Rows carry both times and each one's slow-down factor."""
    import subprocess
    import sys

    from ._threads import available_cores

    busy = available_cores() if busy is None else busy
    kw = dict(sizes=(size,), severities=severities, names=names, batch=batch, reference=reference,
              min_time=min_time, io=io, log=lambda r: None)
    quiet = bench_corruptions(**kw)
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(busy)]
    try:
        time.sleep(0.5)  # let them start spinning
        loaded = bench_corruptions(**kw)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    rows = []
    for q, b in zip(quiet, loaded, strict=True):
        row = {"corruption": q["corruption"], "size": size, "extra": q["extra"], "busy": busy,
               "threads": torch.get_num_threads(), "ours_quiet_ms": q["ours_ms"], "ours_busy_ms": b["ours_ms"],
               "ours_slowdown": b["ours_ms"] / q["ours_ms"], "reference_quiet_ms": q["reference_ms"],
               "reference_busy_ms": b["reference_ms"],
               "reference_slowdown": None if q["reference_ms"] is None else b["reference_ms"] / q["reference_ms"]}
        rows.append(row)
        log(row)
    return rows


# The commands a user types to look around: each must answer without importing torch (#22 item 3).
STARTUP_COMMANDS = (("corrupt", "--list"), ("corrupt", "--help"), ("eval", "--help"), ("zoo", "list"),
                    ("zoo", "show resnet50_augmix"), ("train", "--list"), ("train", "--help"), ("bench", "--help"),
                    ("demo", "--help"), ("leaderboard", "--help"))
_STARTUP = ("import sys, time\nt0 = time.perf_counter()\nfrom robustbench_augmix.cli.{cli} import main\n"
            "try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('%.6f %d' % (time.perf_counter() - t0, 'torch' in sys.modules))")


def bench_startup(runs: int = 5, log=print) -> list[dict]:
    """Wall time of each listing and ``--help`` in a fresh interpreter, ``runs`` times (median and slowest),
    beside a bare interpreter and ``import torch`` timed the same way. ``in_process_s`` is the time from the
    CLI module's import to ``main``'s return, ``wall_s`` the whole process as a user waits for it."""
    import statistics
    import subprocess
    import sys

    cases = [("python (nothing imported)", "import sys, time\nsys.stderr.write('0 0')"),
             ("import torch", "import sys, time\nt0 = time.perf_counter()\nimport torch\n"
                              "sys.stderr.write('%.6f 1' % (time.perf_counter() - t0))")]
    cases += [(f"rb-{cli} {args}", _STARTUP.format(cli=cli, argv=args.split())) for cli, args in STARTUP_COMMANDS]
    rows = []
    for name, code in cases:
        walls, inner, torch_seen = [], [], False
        for _ in range(runs):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            t, seen = r.stderr.split()[-2:]
            inner.append(float(t))
            torch_seen |= seen == "1"
        row = {"command": name, "runs": runs, "wall_s": statistics.median(walls), "wall_max_s": max(walls),
               "in_process_s": statistics.median(inner), "imports_torch": torch_seen}
        rows.append(row)
        log(row)
    return rows


def bench_eval(model: torch.nn.Module, suite: str = "cifar10-c", *, preprocess=None, images: int = 256,
               batch: int = 128, device: str = "cpu", names=None, severity: int = 3, amp: bool = False,
               channels_last: bool = False, min_time: float = 0.5, rounds: int = 3, log=print) -> dict:
    """On-the-fly evaluation vs pure inference of the same model, per image, side by side.

    *Inference* times preprocessing + forward + outcome bookkeeping on batches that are already
    corrupted and on the device. *On the fly* times what ``rb-eval --source generate`` does per batch
    and cell: corrupt on the device, quantise to 8 bits, the storage JPEG round trip when the suite has
    one, then the same inference. The overhead is their difference over inference.
    """
    from .data.sources import ArraySource
    from .evaluation import Config, Evaluation

    s = load_suite(suite)
    names = names or s.names()
    imgs = _photos(s.image_size, images)
    ev = Evaluation(model, Config(suite=suite, data=ArraySource(imgs, np.zeros(images, np.int64)), device=device,
                                  batch_size=batch, amp=amp, channels_last=channels_last, progress=False, n_boot=0),
                    preprocess)
    ev.check_num_classes = False  # synthetic labels: the model's head size does not matter here
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    batches = [torch.from_numpy(imgs[a : a + batch]).to(device).permute(0, 3, 1, 2)  # uint8, as the engine's
               for a in range(0, images, batch)]
    idx = [torch.arange(a, min(a + batch, images)) for a in range(0, images, batch)]
    y = [torch.zeros(len(i), dtype=torch.long) for i in idx]
    rows = []
    for name in names:
        ready = [ev.corrupt(x, name, severity, i) for x, i in zip(batches, idx, strict=True)]

        def infer(ready=ready):
            for x, t in zip(ready, y, strict=True):
                ev.forward(x, t)
            sync()

        def fly(name=name):
            for x, i, t in zip(batches, idx, y, strict=True):
                ev.forward(ev.corrupt(x, name, severity, i), t)
            sync()

        def corrupt_only(name=name):
            for x, i in zip(batches, idx, strict=True):
                ev.corrupt(x, name, severity, i)
            sync()

        # Interleaved rounds, best of each: machine noise hits all three alike.
        t_inf = t_fly = t_cor = float("inf")
        for _ in range(rounds):
            t_inf = min(t_inf, _timeit(infer, min_time / rounds, max_calls=20) / images)
            t_fly = min(t_fly, _timeit(fly, min_time / rounds, max_calls=20) / images)
            t_cor = min(t_cor, _timeit(corrupt_only, min_time / rounds, max_calls=50) / images)
        row = {"corruption": name, "inference_ms": t_inf * 1e3, "on_the_fly_ms": t_fly * 1e3,
               "corrupt_ms": t_cor * 1e3, "overhead": (t_fly - t_inf) / t_inf}
        rows.append(row)
        log(row)
    tot_inf = sum(r["inference_ms"] for r in rows)
    tot_fly = sum(r["on_the_fly_ms"] for r in rows)
    tot_cor = sum(r["corrupt_ms"] for r in rows)
    return {"suite": suite, "device": device, "images": images, "batch": batch, "severity": severity,
            "storage_jpeg": ev.storage_jpeg, "threads": torch.get_num_threads(), "rows": rows,
            "inference_ms": tot_inf / len(rows), "on_the_fly_ms": tot_fly / len(rows),
            "corrupt_ms": tot_cor / len(rows), "overhead": (tot_fly - tot_inf) / tot_inf,
            "corrupt_share": tot_cor / tot_inf}


def bench_train(arch: str = "cifar:wrn40_2", size: int = 32, batch: int = 128, device: str = "cpu",
                severity: float = 3, amp: bool = False, channels_last: bool = False, min_time: float = 1.0,
                rounds: int = 3, log=print) -> dict:
    """AugMix throughput of the per-image path (Pillow, as DataLoader workers run it) vs the batched path
    (draws on the host, pixels on ``device``), and the share of a JSD training step spent on augmentation.

    Both paths produce the same training batch: (clean, aug1, aug2) for ``batch`` images, normalised,
    on the device. The step is forward + JSD loss + backward + SGD on the 3x batch.
    """
    from .augmix import AugMixDataset, jsd_loss
    from .augmix.batched import augmix_batch
    from .data.sources import ArraySource
    from .data.training import TrainSet
    from .models import build
    from .train import pil_to_normalised

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    mean = std = (0.5, 0.5, 0.5)
    src = ArraySource(_photos(size, batch), np.zeros(batch, np.int64))
    transform = "pad_crop_flip" if size <= 64 else "resized_crop_flip"
    kw = {"seed": 0, "severity": severity}
    per_image = AugMixDataset(TrainSet(src, transform, size), pil_to_normalised(mean, std), **kw)
    batched = AugMixDataset(TrainSet(src, transform, size), batched=True, **kw)
    collate = torch.utils.data.default_collate

    def run_per_image():
        views, _ = collate([per_image[i] for i in range(batch)])
        [v.to(dev) for v in views]
        sync()

    host = collate([batched[i] for i in range(batch)])

    def run_host():
        collate([batched[i] for i in range(batch)])

    def run_device(h=host):
        augmix_batch(h[0].to(dev), h[1], mean, std)
        sync()

    model = build(arch, num_classes=10).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    views = [v.contiguous(memory_format=torch.channels_last) if channels_last else v
             for v in augmix_batch(host[0].to(dev), host[1], mean, std)]
    y = torch.zeros(batch, dtype=torch.long, device=dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")

    def run_step():
        with torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=amp):
            loss = jsd_loss(model(torch.cat(views)).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync()

    t = dict.fromkeys(("per_image", "host", "device", "step"), float("inf"))
    fns = {"per_image": run_per_image, "host": run_host, "device": run_device, "step": run_step}
    for r in range(rounds):  # interleaved rounds, best of each
        for k, fn in fns.items():
            t[k] = min(t[k], _timeit(fn, min_time / rounds, min_calls=1, max_calls=50) / batch)
        log({"round": r + 1, **{k: v * 1e3 for k, v in t.items()}})
    batched_ms = (t["host"] + t["device"]) * 1e3
    return {"arch": arch, "size": size, "batch": batch, "device": device, "severity": severity, "amp": amp,
            "threads": torch.get_num_threads(), "per_image_ms": t["per_image"] * 1e3, "batched_ms": batched_ms,
            "batched_host_ms": t["host"] * 1e3, "batched_device_ms": t["device"] * 1e3, "step_ms": t["step"] * 1e3,
            "speedup": t["per_image"] * 1e3 / batched_ms,
            "aug_share_of_step": t["device"] / (t["device"] + t["step"]),
            "aug_share_of_step_with_host": (t["host"] + t["device"]) / (t["host"] + t["device"] + t["step"])}


def bench_methods(arch: str = "cifar:wrn40_2", size: int = 32, batch: int = 128, device: str = "cpu",
                  methods=None, min_time: float = 1.0, log=print) -> dict:
    """Each training method's augmentation cost per image beside the training step it feeds, as rb-train
    runs them on ``device`` (AugMix: the per-image Pillow path on the CPU, the batched path elsewhere).

    The cost counted for a method is what it adds to the standard data path (keyed crop/flip, then
    normalisation, timed apart as ``base``): its per-image policy, its extra views, or its batch operation
    (Cutout, Mixup, CutMix on the normalised batch; PGD's attack passes). Its step is the one it trains
    with: cross-entropy on one view, or the JSD loss on three. ``share`` is cost / (cost + step);
    ``step_multiple`` is (cost + step) / the standard step. For PGD that is below steps + 1, since an
    attack pass takes gradients for the input only (no weight gradients, no optimiser step).
    """
    import torch.nn.functional as F
    from PIL import Image

    from .augmix import AugMixDataset, jsd_loss
    from .augmix.batched import augmix_batch
    from .baselines import METHODS, adversarial, kernels
    from .baselines.policies import KeyedPolicy, build_policy
    from .data.sources import ArraySource
    from .data.training import TrainSet, sample_key
    from .models import build
    from .train import pil_to_normalised

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    mean = std = (0.5, 0.5, 0.5)
    src = ArraySource(_photos(size, batch), np.arange(batch) % 10)
    transform = "pad_crop_flip" if size <= 64 else "resized_crop_flip"
    base = TrainSet(src, transform, size)
    pre = pil_to_normalised(mean, std)
    crops = [base.view(i) for i in range(batch)]
    collate = torch.utils.data.default_collate
    x = collate([pre(Image.fromarray(a)) for a in crops]).to(dev)
    y = torch.as_tensor(src.labels).to(dev)
    model = build(arch, num_classes=10).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step(views, mix=None):
        logits = model(torch.cat(views) if len(views) > 1 else views[0]).float()
        loss = (jsd_loss(logits, y, splits=len(views)) if len(views) > 1 else
                kernels.mixed_cross_entropy(logits, y, mix) if mix is not None else F.cross_entropy(logits, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    def timed(fn) -> float:
        return _timeit(fn, min_time, min_calls=1, max_calls=50) / batch * 1e3

    t_base = timed(lambda: collate([pre(Image.fromarray(base.view(i))) for i in range(batch)]))
    x3 = [x, x.clone(), x.clone()]
    t_step1, t_step3 = timed(lambda: step([x])), timed(lambda: step(x3))
    log({"method": "base", "cost_ms": t_base, "step_ms": t_step1})
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name in methods or list(METHODS):
        m = METHODS[name]
        args = m.resolved_args("cifar10")
        step_ms = t_step3 if m.jsd else t_step1  # JSD: three views through the network; else one
        if m.policy:
            keyed = KeyedPolicy(build_policy(m.policy, args))
            cost = timed(lambda keyed=keyed: [keyed(a, i) for i, a in enumerate(crops)])
        elif m.views == "augmix":
            if dev.type == "cpu":
                ds = AugMixDataset(base, pre, seed=0, severity=3, jsd=m.jsd)
                cost = timed(lambda ds=ds: collate([ds[i] for i in range(batch)])) - t_base
            else:
                ds = AugMixDataset(base, seed=0, severity=3, jsd=m.jsd, batched=True)

                def device_augmix(ds=ds):
                    h = collate([ds[i] for i in range(batch)])
                    augmix_batch(h[0].to(dev), h[1], mean, std)
                    sync()
                cost = timed(device_augmix)
        elif m.views == "simple":
            cost = timed(lambda: [pre(Image.fromarray(base.view(i, f"crop/{k}"))) for i in range(batch)
                                  for k in (1, 2)])
        elif m.batch == "cutout":
            def cutout(a=args):
                rngs = [sample_key(0, 0, i, "cutout") for i in range(batch)]
                kernels.cutout(x, kernels.draw_cutout(rngs, size, size), int(a["length"]))
                sync()
            cost = timed(cutout)
        elif m.batch == "mixup":
            cost = timed(lambda a=args: (kernels.mixup(x, kernels.draw_mixup(rng, batch, float(a["alpha"]))), sync()))
        elif m.batch == "cutmix":
            cost = timed(lambda a=args: (kernels.cutmix(
                x, kernels.draw_cutmix(rng, batch, size, size, float(a["alpha"]), 1.0)), sync()))
        elif m.batch == "pgd":
            cost = timed(lambda a=args: (adversarial.pgd_linf(
                model, x, y, mean=mean, std=std, epsilon=float(a["epsilon"]), step_size=float(a["step_size"]),
                steps=int(a["steps"]), generator=gen), sync()))
        else:
            cost = 0.0
        row = {"method": name, "cost_ms": max(cost, 0.0), "step_ms": step_ms,
               "share": max(cost, 0.0) / (max(cost, 0.0) + step_ms),
               "step_multiple": (max(cost, 0.0) + step_ms) / t_step1}
        log(row)
        rows.append(row)
    return {"arch": arch, "size": size, "batch": batch, "device": device, "threads": torch.get_num_threads(),
            "base_ms": t_base, "step_ms": t_step1, "jsd_step_ms": t_step3, "rows": rows}


def bench_perturbations(suite: str = "cifar10-p", images: int = 64, names=None, min_time: float = 0.5,
                        log=print) -> list[dict]:
    """ms per sequence for each generated perturbation: ours (:func:`~robustbench_augmix.perturbations.perturb`
    on the batch, torch's threads) against the generator script's loop, one image and one frame at a time
    (:mod:`._reference_p`, single-threaded as the scripts ran), on the same photographs at the suite's size."""
    from . import _reference_p
    from .perturbations import load_psuite, perturb

    s = load_psuite(suite)
    x = torch.from_numpy(_photos(s.image_size, images)).permute(0, 3, 1, 2).contiguous()
    rows = []
    for name in names or s.generated():
        spec = s.perturbations[name]
        ours = _timeit(lambda name=name: perturb(x, name, suite=suite, seed=0), min_time, min_calls=1) / images
        imgs = x.permute(0, 2, 3, 1).numpy()
        turn = iter(range(10**9))

        def ref(name=name, spec=spec, imgs=imgs, turn=turn):
            img = imgs[next(turn) % len(imgs)]
            _reference_p.frames(name, img, spec.frames, lambda i: spec.params(1, i, s))

        with _single_thread():
            theirs = _timeit(ref, min_time, min_calls=2)
        row = {"perturbation": name, "suite": suite, "frames": spec.frames, "ours_ms": ours * 1e3,
               "reference_ms": theirs * 1e3, "speedup": theirs / ours}
        log(row)
        rows.append(row)
    return rows


@contextlib.contextmanager
def _single_thread():
    """torch on one thread for the reference loops, as one script process per perturbation ran them."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
