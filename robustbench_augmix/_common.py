"""What every module shares: the error base class, atomic files, hashes, JSON, versions, cache folders,
the TOML reader, the distributed set-up and progress bars.

Nothing here imports torch at module level, so listings and ``--help`` stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["InputError", "RBAError", "Rate", "StorageError", "atomic_write", "cache_dir", "check_device",
           "describe_difference", "dist_info", "finite_json", "init_distributed", "inside", "json_dump", "key_hash",
           "package_tables", "plain_name", "progress_bar", "save_npy", "sha256_file", "storage_errors", "tomllib",
           "versions"]


class RBAError(Exception):
    """A problem with the user's input or environment. Every CLI catches this one type, prints its message
    without a traceback and exits 2; the message names the problem and the fix."""


class InputError(RBAError, ValueError):
    """A value the user passed (a name, a shape, a range, a file's content) is not accepted."""


class StorageError(RBAError, OSError):
    """The file system refused a read or write (full disk, read-only or missing folder, a file where a
    folder should be)."""


def lazy_exports(package: str, lazy: Mapping[str, str], namespace: dict):
    """PEP 562 ``__getattr__`` and ``__dir__`` for ``package`` that import each name of ``lazy`` (name ->
    submodule) on its first use and keep it in ``namespace`` (the package's globals) after that: a package's
    heavy names then cost nothing until they are used."""
    import importlib

    def __getattr__(name: str):
        if name in lazy:
            value = getattr(importlib.import_module(f".{lazy[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(lazy))

    return __getattr__, __dir__


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@contextlib.contextmanager
def storage_errors(folder: str | os.PathLike | None, need: Callable[[], int | None] | None = None):
    """Turn an ``OSError`` raised inside into a :class:`StorageError` whose one-line message names the file,
    the cause and the fix; a full disk also says how much space the run needs (``need()`` bytes)."""
    import errno
    import shutil

    try:
        yield
    except RBAError:
        raise
    except OSError as e:
        where = e.filename or folder
        # numpy's writers report a short write as "N requested and M written" without an errno
        short_write = e.errno is None and "requested and" in str(e) and "written" in str(e)
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or short_write:
            total = need() if need is not None else None
            free = None
            base = Path(folder or ".").expanduser().resolve()
            while not base.exists() and base != base.parent:
                base = base.parent
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(base).free
            size = "" if total is None else f" this run needs about {_size(total)} in all"
            have = "" if free is None else f" ({_size(free)} free now)"
            msg = (f"the disk holding {folder} is full while writing {where}:{size}{have}. Free some space or "
                   "choose another --out; finished files are kept, and the same command resumes")
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            msg = f"{where} is not writable ({e.strerror}); choose another --out, or fix its permissions"
        elif e.errno in (errno.ENOTDIR, errno.EEXIST) and folder is not None and Path(folder).is_file():
            msg = f"--out {folder} is a file, not a folder; choose a folder (it is created if missing)"
        else:
            msg = f"{where}: {e.strerror or e}"
        raise StorageError(msg) from None


# ---------------------------------------------------------------------------------- files
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` into the same folder, then rename onto ``path``: a file under its
    final name is always complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a finished file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain_name(name, what: str) -> str:
    """``name`` if it is a plain file name (no folder part, not ``.``/``..``, not hidden, no NUL), else an
    :class:`InputError`: names from cards, options and run folders never reach outside their folder."""
    ok = (isinstance(name, str) and name and name == name.strip() and not name.startswith(".")
          and not any(c in name for c in "/\\\0"))
    if not ok:
        raise InputError(f"{what} {name!r} is not a plain file name: it must name a file inside its folder, without "
                         "'/', '\\', a leading '.' or surrounding spaces")
    return name


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved, links followed)."""
    p, f = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return p == f or f in p.parents


def save_npy(path: Path, arr) -> None:
    """``np.save`` through a closed-before-rename file handle (for :func:`atomic_write`)."""
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, arr)


def finite_json(obj):
    """``obj`` with every non-finite float replaced by None (JSON's null: the value is undefined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def json_dump(path: Path, obj) -> None:
    """``obj`` as indented, key-sorted, strict JSON (no bare NaN or Infinity, which strict parsers reject:
    an undefined value is null), atomically."""
    text = json.dumps(finite_json(obj), indent=1, sort_keys=True, allow_nan=False)
    atomic_write(path, lambda p: p.write_text(text))


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_hash(*parts, digest_size: int = 8) -> int:
    """An unsigned integer from ``blake2b("/".join(parts))``, little-endian: the one way every stream of
    randomness here is keyed (per image, per epoch, per sample), stable across platforms and Pythons."""
    key = "/".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=digest_size).digest(), "little")


def cache_dir(*sub: str) -> Path:
    """``$RBA_CACHE`` (default ``$XDG_CACHE_HOME/robustbench_augmix``, i.e. ``~/.cache/robustbench_augmix``)
    joined with ``sub``."""
    base = os.environ.get("RBA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "robustbench_augmix")
    return Path(base, *sub)


def package_tables(checkout_folder: str, package: str) -> dict[str, Any]:
    """``{stem: file}`` for the ``*.toml`` tables of a top-level data folder (``corruptions``, ``zoo``): read
    from the checkout when this is an editable one, else from the wheel's copy ``package``."""
    import importlib.resources

    checkout = Path(__file__).resolve().parents[1] / checkout_folder
    if checkout.is_dir() and any(checkout.glob("*.toml")):
        root: Any = checkout
    else:
        root = importlib.resources.files(package)
    return {p.name[: -len(".toml")]: p for p in root.iterdir() if p.name.endswith(".toml")}


def versions() -> dict[str, str]:
    """The versions that make a result reproducible."""
    import numpy as np
    import PIL
    import torch
    import torchvision

    from . import __version__

    return {"robustbench_augmix": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------- run identities
def _short(v) -> str:
    """A value of a run's identity for an error message: long hashes cut to 12 characters."""
    if isinstance(v, str) and len(v) > 16:
        return v[:12] + "..."
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def describe_difference(old: Mapping, new: Mapping) -> tuple[list[str], str]:
    """The keys that differ, and ``"key: old there, new now; ..."`` for an error message."""
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return diff, "; ".join(f"{k}: {_short(old.get(k))} there, {_short(new.get(k))} now" for k in diff)


def check_device(device: str) -> str:
    """``device`` if torch can use it, else an :class:`InputError` that says what is visible."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"--device {device!r} is not a device torch knows ({e}); use cpu, cuda or cuda:N") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is visible here (torch.cuda.is_available() is "
                             f"False; torch {torch.__version__}); use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


# ---------------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int, int]:
    """``(rank, world size, local rank)``: of the initialised process group, else of torchrun's environment,
    else ``(0, 1, 0)``."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size(), local
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local
    return 0, 1, 0


def init_distributed(device: str) -> tuple[str, bool]:
    """Join torchrun's process group if one is launched and none is initialised yet.

    Returns ``(device, created)``: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun; ``created`` says
    whether this call made the group (then the caller destroys it)."""
    import datetime

    import torch
    import torch.distributed as dist

    _, world, local = dist_info()
    if world <= 1 or dist.is_initialized():
        return device, False
    if device == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=datetime.timedelta(hours=12))
    return device, True


# ---------------------------------------------------------------------------------- progress
@contextlib.contextmanager
def progress_bar(enabled: bool, *, transient: bool = False, console=None) -> Iterator[Any]:
    """A rich ``Progress`` on stderr with the columns every tool here shows (description, bar, done/total,
    percent, the task's ``info`` field, time left), or ``None`` when disabled. Add tasks with ``info=""``."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*cols, console=console or Console(stderr=True), transient=transient) as prog:
        yield prog


class Rate:
    """Images per second since construction, for a progress bar's text."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, done: int) -> str:
        return f"{done / max(time.perf_counter() - self.t0, 1e-9):,.0f} img/s"
