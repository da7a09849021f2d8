"""AugMix + JSD training (the recipes are in :mod:`.recipes`): a resumable loop, DistributedDataParallel
under torchrun, and the trained model written as safetensors with a model card that ``rb-eval`` and the
zoo read.

Determinism: the shuffling order of epoch ``e`` comes from a generator seeded by (seed, e); every image's
crop, flip and AugMix draws come from (seed, e, index) (:func:`~robustbench_augmix.data.training.sample_key`);
the torch RNG (dropout) is reseeded from (seed, e, rank) at the start of each epoch. A checkpoint holds the
model, optimiser, step count, AMP scaler and epoch, written atomically at the end of every epoch, so a run
killed at any point and resumed gives, on CPU, the same weights bit for bit as one that was never stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._common import (
    atomic_write,
    dist_info,
    init_distributed,
    key_hash,
    progress_bar,
    sha256_file,
    versions,
)
from .augmix import AugMixDataset, jsd_loss
from .augmix.batched import augmix_batch
from .baselines import get_method
from .baselines.kernels import mixed_cross_entropy
from .baselines.policies import KeyedPolicy, build_policy
from .baselines.views import Indexed, SimpleViews
from .data.training import TrainSet, digits, open_train_set, sample_key
from .recipes import Recipe, TrainError, learning_rate, load_recipe, recipes
from .zoo import write_card

__all__ = ["Recipe", "TrainConfig", "TrainError", "Trainer", "learning_rate", "load_recipe", "recipes", "write_card"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
LOG_FIELDS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "images_per_s", "seconds")


# ------------------------------------------------------------------------------------------ helpers
class _EpochSampler(torch.utils.data.Sampler):
    """This rank's share of epoch ``e``'s permutation: ``perm(seed, e)[rank::world]``."""

    def __init__(self, n: int, seed: int, rank: int, world: int) -> None:
        self.n, self.seed, self.rank, self.world, self.epoch = n, seed, rank, world, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(key_hash("rba/v1/shuffle", self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g)[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def pil_to_normalised(mean, std) -> Callable:
    """PIL image -> float (3, H, W) tensor, normalised: the per-image AugMix path's ``preprocess``."""
    import torchvision.transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(list(mean), list(std))])


# ------------------------------------------------------------------------------------------ trainer
@dataclass
class TrainConfig:
    out: str
    data: str | None = None
    device: str = "cpu"
    workers: int = 0
    amp: bool = False
    channels_last: bool = False
    seed: int = 0
    batched: bool | None = None   # AugMix on the device (default: on CUDA)
    resume: bool = False
    progress: bool = True
    limit: int | None = None      # first N training images (smoke tests)
    stop_after: int | None = None  # end this run after that many epochs (the checkpoint lets it resume)
    threads: int | None = None


class Trainer:
    """Trains ``recipe`` into ``config.out``: ``checkpoint.pt``, ``log.csv``, and at the end
    ``model.safetensors`` + ``card.toml``."""

    def __init__(self, recipe: Recipe, config: TrainConfig, train_set=None, test_set=None) -> None:
        from .models import build

        self.r, self.cfg = recipe, config
        self.out = Path(config.out).expanduser()
        if config.threads:
            torch.set_num_threads(config.threads)
        dev, _ = init_distributed(config.device)
        self.rank, self.world, _ = dist_info()
        self.device = torch.device(dev)
        if self.r.batch_size % self.world:
            raise TrainError(f"batch size {self.r.batch_size} does not split over {self.world} processes")
        self.batched = config.batched if config.batched is not None else self.device.type == "cuda"

        src = train_set if train_set is not None else open_train_set(recipe.dataset, config.data)
        if config.limit:
            from .data.sources import ArraySource

            src = (dataclasses.replace(src, files=src.files[:config.limit]) if hasattr(src, "files") else
                   ArraySource(src.images[:config.limit], src.labels[:config.limit], getattr(src, "classes", None)))
        self.num_classes = int(np.max(src.labels)) + 1 if not getattr(src, "classes", None) else len(src.classes)
        self.method = get_method(recipe.method)
        policy = (KeyedPolicy(build_policy(self.method.policy, recipe.method_args)) if self.method.policy else None)
        base = TrainSet(src, recipe.transform, recipe.input_size, seed=config.seed, policy=policy)
        self.pre = pil_to_normalised(recipe.mean, recipe.std)
        if self.method.views == "simple":
            self.batched = False  # crop/flip views are cheap per image; AugMix's device path does not apply
            self.ds = SimpleViews(base, self.pre)
        else:
            self.ds = AugMixDataset(base, self.pre, seed=config.seed, severity=recipe.severity, width=recipe.width,
                                    depth=recipe.depth, alpha=recipe.alpha, all_ops=recipe.all_ops, jsd=recipe.jsd,
                                    augmix=recipe.augmix, batched=self.batched)
        self.sampler = _EpochSampler(len(self.ds), config.seed, self.rank, self.world)
        self.loader = torch.utils.data.DataLoader(Indexed(self.ds), batch_size=recipe.batch_size // self.world,
                                                  sampler=self.sampler, num_workers=config.workers,
                                                  pin_memory=self.device.type == "cuda")
        self.test_set = test_set if test_set is not None else self._default_test_set()

        torch.manual_seed(key_hash("rba/v1/init", config.seed))
        self.model = build(recipe.arch, num_classes=self.num_classes).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                   nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and self.device.type == "cuda")
        self.epoch, self.step = 0, 0
        if config.resume:
            self._load_checkpoint()
        elif (self.out / CHECKPOINT).exists():
            raise TrainError(f"{self.out} already holds a run ({CHECKPOINT}); pass --resume to continue it, or "
                             "choose another --out")

    # ---------------------------------------------------------------- data
    def _default_test_set(self):
        if self.r.dataset == "digits":
            return digits("test")
        if self.r.dataset in ("cifar10", "cifar100"):
            from .data.sources import CifarSource, DatasetMissing

            try:
                return CifarSource.open(self.cfg.data, self.r.dataset, download=self.cfg.data is None)
            except DatasetMissing:
                return None
        return None

    # ---------------------------------------------------------------- checkpoints
    def _identity(self) -> dict:
        recipe = {k: v for k, v in self.r.to_dict().items() if k != "card"}  # metadata, not training state
        return {"recipe": recipe, "seed": self.cfg.seed, "world": self.world, "batched": self.batched,
                "limit": self.cfg.limit, "n_train": len(self.ds)}

    def _save_checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                 "identity": json.dumps(self._identity(), sort_keys=True)}
        atomic_write(self.out / CHECKPOINT, lambda p: torch.save(state, p))

    def _load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.exists():
            raise TrainError(f"--resume: no {CHECKPOINT} in {self.out}; start without --resume")
        state = torch.load(path, map_location=self.device, weights_only=True)
        ident = json.loads(state["identity"])
        mine = self._identity()
        if ident != mine:
            flat = lambda d: {**{k: v for k, v in d.items() if k != "recipe"}, **d.get("recipe", {})}  # noqa: E731
            old, new = flat(ident), flat(mine)
            diff = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in sorted(new) if old.get(k) != new[k]]
            raise TrainError(f"--resume: {path} was written by a different run (differs in {diff}); use the same "
                             "recipe, overrides, seed and process count, or another --out")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    # ---------------------------------------------------------------- one epoch
    def _views(self, batch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The batch's normalised views on the device, its labels, and its sample indices."""
        dev = self.device
        *batch, idx = batch
        if self.batched:
            x, draws, y = batch
            views = augmix_batch(x.to(dev, non_blocking=True), draws, self.r.mean, self.r.std)
            if self.r.augmix and not self.r.jsd:
                views = views[1:]
        else:
            x, y = batch
            views = [v.to(dev, non_blocking=True) for v in (x if isinstance(x, (list, tuple)) else [x])]
        if self.cfg.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views, y.to(dev, non_blocking=True), idx

    def _batch_op(self, views: list[torch.Tensor], y: torch.Tensor, idx: torch.Tensor):
        """The method's batch operation (:mod:`.baselines.kernels`, PGD): new views, and the Mixup/CutMix draw
        that the loss needs (else None). Cutout's centres are keyed per image; a batch draw on
        (seed, step, rank), the step being in the checkpoint, so a resumed run draws the same."""
        from .baselines import adversarial, kernels

        op, a = self.method.batch, self.r.method_args
        if not op:
            return views, None
        x = views[0]
        if op == "cutout":
            rngs = [sample_key(self.cfg.seed, self.epoch, int(i), "cutout") for i in idx]
            return [kernels.cutout(x, kernels.draw_cutout(rngs, x.shape[-2], x.shape[-1]), int(a["length"]))], None
        key = key_hash("rba/v1/batch", op, self.cfg.seed, self.step, self.rank, digest_size=16)
        if op == "mixup":
            draw = kernels.draw_mixup(np.random.default_rng(key), len(x), float(a["alpha"]))
            return [kernels.mixup(x, draw)], draw
        if op == "cutmix":
            draw = kernels.draw_cutmix(np.random.default_rng(key), len(x), x.shape[-2], x.shape[-1],
                                       float(a["alpha"]), float(a["prob"]))
            return [kernels.cutmix(x, draw)], draw
        if op == "pgd":  # on the bare module: no DDP hooks fire for the attack's extra passes
            g = torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)
            return [adversarial.pgd_linf(self.model, x, y, mean=self.r.mean, std=self.r.std,
                                         epsilon=float(a["epsilon"]), step_size=float(a["step_size"]),
                                         steps=int(a["steps"]), random_start=bool(a["random_start"]),
                                         generator=g)], None
        raise TrainError(f"method {self.method.name}: no batch operation {op!r}")

    def _train_epoch(self, advance) -> dict:
        r, dev = self.r, self.device
        self.net.train()
        self.ds.set_epoch(self.epoch)
        self.sampler.epoch = self.epoch
        torch.manual_seed(key_hash("rba/v1/torch", self.cfg.seed, self.epoch, self.rank))
        steps = len(self.loader)
        tot = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, wrong, count
        t0, seen, shown, every = time.perf_counter(), 0, 0, max(1, steps // 100)
        amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
        for batch in self.loader:
            lr = learning_rate(r, self.step, steps)
            for g in self.opt.param_groups:
                g["lr"] = lr
            views, y, idx = self._views(batch)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=self.cfg.amp):
                views, mix = self._batch_op(views, y, idx)
                logits = self.net(torch.cat(views) if len(views) > 1 else views[0])
                logits = logits.float()
                loss = (jsd_loss(logits, y, r.jsd_lambda, splits=len(views)) if r.jsd else
                        mixed_cross_entropy(logits, y, mix) if mix is not None else F.cross_entropy(logits, y))
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.step += 1
            b = len(y)
            clean = logits[:b]
            # accumulate on the device; read back (a sync) only for the progress bar, ~100 times an epoch
            tot += torch.stack([loss.detach().double() * b, (clean.detach().argmax(1) != y).sum().double(),
                                torch.tensor(float(b), dtype=torch.float64, device=dev)])
            seen += b
            if self.step % every == 0 or seen == len(self.sampler):
                t = tot.tolist()
                self._check_finite(t[0], lr)
                advance(seen - shown, t[0] / t[2], t[1] / t[2], seen * self.world / (time.perf_counter() - t0))
                shown = seen
        if self.world > 1:
            torch.distributed.all_reduce(tot)
        tot = tot.cpu()
        self._check_finite(float(tot[0]), lr)
        secs = time.perf_counter() - t0
        return {"lr": lr, "train_loss": float(tot[0] / tot[2]), "train_error": float(tot[1] / tot[2]),
                "images_per_s": float(tot[2]) / secs, "seconds": secs}

    def space_needed(self) -> int:
        """Bytes a run keeps: the checkpoint (weights, momentum, and the temporary copy of an atomic write)
        and the exported safetensors."""
        return 5 * sum(p.numel() * p.element_size() for p in self.model.parameters()) + (1 << 20)

    def _check_finite(self, loss_sum: float, lr: float) -> None:
        """Stop before a diverged model is checkpointed or exported: the loss became NaN or inf."""
        if not math.isfinite(loss_sum):
            raise TrainError(
                f"the training loss became {loss_sum} in epoch {self.epoch + 1} (step {self.step}, learning rate "
                f"{lr:g}): the run diverged, and nothing of this epoch is saved (the last checkpoint, if any, is "
                "intact). Lower --lr, check the data, or turn --amp off; then --resume from the last epoch or "
                "start over")

    @torch.no_grad()
    def test(self) -> dict:
        """Clean test loss and error of the current model (rank 0's full pass)."""
        if self.test_set is None:
            return {"test_loss": None, "test_error": None}
        self.model.eval()
        loss = wrong = 0.0
        n = len(self.test_set)
        for s in range(0, n, 500):
            idx = range(s, min(n, s + 500))
            x = torch.stack([self.pre(self.test_set.read(i)) for i in idx]).to(self.device)
            y = torch.as_tensor(np.asarray(self.test_set.labels)[s:s + len(idx)]).to(self.device)
            out = self.model(x).float()
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            wrong += float((out.argmax(1) != y).sum())
        return {"test_loss": loss / n, "test_error": wrong / n}

    # ---------------------------------------------------------------- the run
    def fit(self) -> dict:
        """Train from the current epoch to the recipe's last (or ``stop_after`` epochs); returns the last
        epoch's log row."""
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.json").write_text(json.dumps(self._identity(), indent=1))
        row: dict = {}
        stop = self.r.epochs if self.cfg.stop_after is None else min(self.r.epochs, self.epoch + self.cfg.stop_after)
        with _Progress(self.cfg.progress and self.rank == 0) as bar:
            while self.epoch < stop:
                bar.start(f"epoch {self.epoch + 1}/{self.r.epochs}", len(self.sampler))
                stats = self._train_epoch(bar.advance)
                self.epoch += 1
                if self.rank == 0:
                    row = {"epoch": self.epoch, **stats, **self.test()}
                    self._log(row)
                    self._save_checkpoint()
                    bar.done(row)
                if self.world > 1:
                    torch.distributed.barrier()
        if self.epoch >= self.r.epochs and self.rank == 0:
            self.export()
        return row

    def _log(self, row: dict) -> None:
        path = self.out / LOG
        keep = []
        if path.exists():  # after a resume, drop rows of epochs that are being redone
            with open(path, newline="") as f:
                keep = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
        keep.append({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})

        def write(p: Path) -> None:
            with open(p, "w", newline="") as f:
                w = csv.DictWriter(f, LOG_FIELDS)
                w.writeheader()
                w.writerows(keep)

        atomic_write(path, write)

    def export(self) -> Path:
        """``model.safetensors`` and a ``card.toml`` that ``rb-eval --model`` and the zoo read."""
        from safetensors.torch import save_file

        weights = self.out / "model.safetensors"
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(weights, lambda p: save_file(sd, str(p), metadata={"recipe": self.r.id}))
        last = {}
        if (self.out / LOG).exists():
            with open(self.out / LOG, newline="") as f:
                rows = list(csv.DictReader(f))
            last = rows[-1] if rows else {}
        name = self.out.name or "model"
        card = {
            "id": name, "name": f"{self.r.arch.split(':', 1)[1]} ({self.r.id}, seed {self.cfg.seed})",
            "dataset": self.r.dataset, "num_classes": self.num_classes, "builder": self.r.arch,
            "params": sum(p.numel() for p in self.model.parameters()),
            "note": f"Trained with rb-train on {time.strftime('%Y-%m-%d')}.",
            "weights": {"path": weights.name, "sha256": sha256_file(weights), "licence": "the trainer's own",
                        "origin": f"rb-train --recipe {self.r.id} (seed {self.cfg.seed})"},
            "preprocess": {"input_size": self.r.input_size, "interpolation": "bilinear", "mean": list(self.r.mean),
                           "std": list(self.r.std)},
            "recipe": {"text": self.r.text, **{k: v for k, v in self.r.to_dict().items() if k != "id"},
                       "recipe_id": self.r.id, "seed": self.cfg.seed},
            "training": {**{k: float(last[k]) for k in ("test_error", "train_loss") if last.get(k) not in (None, "")},
                         "epochs_run": int(last.get("epoch", 0) or 0), "images": len(self.ds),
                         **({"limit": self.cfg.limit} if self.cfg.limit else {}), **versions()},
            "reported": {},
        }
        zoo_card, why = self._reproduces()
        if zoo_card is not None:
            card["note"] += (f" Its recipe is the one of zoo card {zoo_card.id}; [reported] holds that card's "
                             "published numbers, to compare this run with (they are not this run's).")
            card["reported"] = {**zoo_card.reported, "reproduces": zoo_card.id}
        elif why:
            card["note"] += f" No published numbers attached: {why}."
        write_card(self.out / "card.toml", card)
        return self.out / "card.toml"

    def _reproduces(self):
        """``(zoo card, "")`` when this run followed its recipe's card unchanged, else ``(None, why)``."""
        if not self.r.card:
            return None, ""
        from .zoo import get_card

        table = load_recipe(self.r.id)
        changed = [f"{f.name} {getattr(table, f.name)!r} -> {getattr(self.r, f.name)!r}"
                   for f in dataclasses.fields(Recipe) if getattr(table, f.name) != getattr(self.r, f.name)]
        if changed:
            return None, f"the recipe was changed ({', '.join(changed)})"
        if self.cfg.limit:
            return None, f"trained on the first {self.cfg.limit} images only (--limit)"
        return get_card(self.r.card), ""


class _Progress:
    """A progress bar per epoch (images, loss, error, images/s, ETA), and a line per finished epoch."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.task = None

    def __enter__(self):
        self._ctx = progress_bar(self.enabled, transient=True)
        self.p = self._ctx.__enter__()
        return self

    def start(self, desc: str, total: int) -> None:
        if self.p is not None:
            self.task = self.p.add_task(desc, total=total, info="")

    def advance(self, n: int, loss: float, err: float, ips: float) -> None:
        if self.p is not None:
            self.p.update(self.task, advance=n, info=f"loss {loss:.3f}  err {100 * err:.1f}%  {ips:.0f} img/s")

    def done(self, row: dict) -> None:
        if self.p is not None:
            self.p.remove_task(self.task)
            test = "" if row.get("test_error") is None else f"  test error {100 * row['test_error']:.2f}%"
            self.p.console.print(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  train error "
                                 f"{100 * row['train_error']:.2f}%{test}  {row['images_per_s']:.0f} img/s  "
                                 f"{row['seconds']:.1f} s")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
