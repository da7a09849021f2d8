"""The run identity and the resumable cell cache of an evaluation.

A chunk's per-image outcomes are written atomically to ``<out>/<name>.cells/chunk-<k>.npz``; ``run.json``
beside them holds the identity of the run that wrote them. A rerun whose identity differs in anything
that changes the numbers (weights, suite table, data, seed, preprocessing, the device whose random
stream drew the corruptions ...) is refused with what differs, so two runs' numbers are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._common import RBAError, describe_difference, json_dump
from ..corruptions import rng_device

SCHEMA = "robustbench-augmix/results/1"


class EvaluationError(RBAError, ValueError):
    """A user-facing problem with the evaluation's inputs (shown without a traceback by rb-eval)."""


class CacheMismatch(EvaluationError):
    """``--out`` holds cells of a different run."""


def model_fingerprint(model) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): the identity of the weights."""
    import torch

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def run_identity(*, model: str, suite, source: str, data: str, seed: int, storage_jpeg: bool, preprocess: Mapping,
                 labels, chunk_size: int, amp: bool, device) -> dict:
    """What must be equal for two runs' cells to be mixed. ``rng_device`` is there because random fields
    are drawn on the device (:mod:`robustbench_augmix.corruptions._rng`): a CUDA GPU draws another stream
    than the CPU, so cells generated on one cannot be completed on the other. ``data`` is the fingerprint of
    what was read (:func:`~robustbench_augmix.data.sources.fingerprint`): other images with the same labels
    are other data."""
    return {
        "schema": SCHEMA, "model": model, "suite": suite.id, "table_hash": suite.table_hash, "source": source,
        "data": data,
        "seed": seed, "storage_jpeg": storage_jpeg, "preprocess": dict(preprocess), "n_images": len(labels),
        "labels": hashlib.sha256(np.asarray(labels).tobytes()).hexdigest()[:16], "chunk_size": chunk_size,
        "amp": amp, "rng_device": rng_device(device) if source == "generate" else None,
    }


class CellCache:
    """The chunk files of one run under ``folder`` (None: no cache, nothing is written)."""

    def __init__(self, folder: Path | None) -> None:
        self.dir = folder

    def check(self, identity: Mapping, write: bool, factory: bool = True) -> None:
        """Refuse a folder written by another run; record ``identity`` in a new one (``write``: rank 0)."""
        if self.dir is None:
            return
        path = self.dir / "run.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != identity and not any(self.dir.glob("chunk-*.npz")):
                old = dict(identity)  # a run that failed before its first chunk left nothing to mix in
                json_dump(path, old)
            if old != identity:
                diff, shown = describe_difference(old, identity)
                hint = (" The model's weights differ (sha256 of its state dict): a factory that builds untrained"
                        " or randomly initialised weights must seed them (torch.manual_seed) to resume."
                        if "model" in diff and factory else
                        " The model's weights differ (sha256 of its state dict): another checkpoint or card was"
                        " evaluated under this name." if "model" in diff else "")
                if "data" in diff:
                    hint += (" The images read are not the ones the cells were computed from (another --data or"
                             " --clean-data, or files changed since; a copy made without keeping modification"
                             " times reads as changed).")
                if "rng_device" in diff:
                    hint += (" The corruptions' random fields were drawn on another device, whose random stream"
                             " differs: resume on that device (--device), or start over.")
                raise CacheMismatch(
                    f"{self.dir} holds cells of a different run ({shown}).{hint} Its numbers cannot be mixed with "
                    "this run's: pass another --out or --name, or delete that folder to start over."
                )
        elif write:
            json_dump(path, dict(identity))

    def _path(self, k: int) -> Path:
        return self.dir / f"chunk-{k:05d}.npz"

    def load(self, k: int) -> dict[tuple[str, int], dict[str, np.ndarray]]:
        """Chunk ``k``'s cells ``{(corruption, severity): {field: (n,) array}}`` ({} if not cached)."""
        if self.dir is None or not self._path(k).exists():
            return {}
        out: dict = {}
        with np.load(self._path(k)) as z:
            for key in z.files:
                c, s, f = key.split("|")
                out.setdefault((c, int(s)), {})[f] = z[key]
        return out

    def save(self, k: int, cells: Mapping) -> None:
        if self.dir is None:
            return
        from .._common import atomic_write

        arrays = {f"{c}|{s}|{f}": v for (c, s), d in cells.items() for f, v in d.items()}

        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(self._path(k), write)
