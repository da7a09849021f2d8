"""Building models from a builder string, a user's factory file, or a checkpoint, and loading weights safely.

Builders: ``timm:<name>`` (any timm architecture), ``torchvision:<name>`` (any torchvision classification
model), ``cifar:<name>`` (the AugMix paper's CIFAR networks), ``antialiased:resnet50`` (Zhang 2019).
Checkpoints are read with ``torch.load(weights_only=True)`` or from safetensors; a checkpoint that needs
full pickle is refused unless the caller trusts it.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from .._common import RBAError


class ModelError(RBAError, ValueError):
    """A model could not be built or its weights could not be loaded (a user-facing message)."""


def build(builder: str, num_classes: int | None = None, **kwargs) -> torch.nn.Module:
    """``timm:resnet50`` / ``torchvision:resnet50`` / ``cifar:wrn40_2`` → an untrained module (weights come
    separately)."""
    kind, _, name = builder.partition(":")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if kind == "timm":
        import timm

        if name not in timm.list_models():
            raise ModelError(f"timm has no architecture {name!r} (timm.list_models('{name[:4]}*') lists similar ones)")
        return timm.create_model(name, pretrained=False, **kwargs)
    if kind == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ModelError(f"torchvision has no classification model {name!r}")
        return torchvision.models.get_model(name, weights=None, **kwargs)
    if kind == "cifar":
        from .cifar import BUILDERS

        if name not in BUILDERS:
            raise ModelError(f"no CIFAR architecture {name!r}; available: {', '.join(sorted(BUILDERS))}")
        return BUILDERS[name](**kwargs)
    if kind == "antialiased":
        from . import antialiased

        if name != "resnet50":
            raise ModelError(f"no anti-aliased architecture {name!r}; available: resnet50")
        return antialiased.resnet50(**kwargs)
    raise ModelError(f"unknown builder {builder!r}; use timm:<name>, torchvision:<name>, cifar:<name> or "
                     "antialiased:resnet50")


def load_factory(spec: str):
    """``path/to/file.py:factory`` → the object returned by calling ``factory()``."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise ModelError(f"--model {spec!r}: expected a zoo name or path/to/file.py:factory")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"--model {spec!r}: {file} does not exist")
    mod_name = f"rba_user_model_{abs(hash(str(file.resolve())))}"
    mspec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(mspec)
    sys.modules[mod_name] = module
    mspec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelError(f"--model {spec!r}: {file} defines no callable {name!r}")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"--model {spec!r}: {name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: safetensors, or a torch file read with ``weights_only=True``
    (full pickle only with ``trust=True``). Containers ``{"state_dict": ...}``, ``{"model": ...}`` and
    prefixes ``module.`` / ``model.`` are unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            if not trust:
                raise ModelError(
                    f"{path} is a full-pickle checkpoint, which can run arbitrary code when loaded; it was refused. "
                    "If you trust its origin, pass --trust-checkpoint (Python: trust=True); better, re-save "
                    "its state_dict with torch.save or as safetensors."
                ) from None
            sd = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelError(f"{path} is not a checkpoint torch can read ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model_state_dict", "model", "net", "state_dict_ema"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    return strip_prefixes(dict(sd))


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` (DataParallel/DDP) or ``model.`` prefix that every key carries."""
    for prefix in ("module.", "model.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_weights(model: torch.nn.Module, path: str | Path, trust: bool = False) -> torch.nn.Module:
    """Load a checkpoint into ``model`` strictly; a mismatch names the missing and unexpected keys."""
    sd = read_state_dict(path, trust)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shape:
        def few(xs):
            return ", ".join(xs[:5]) + (f" (+{len(xs) - 5} more)" if len(xs) > 5 else "") if xs else "none"

        raise ModelError(
            f"checkpoint {path} does not fit {type(model).__name__}: missing keys: {few(missing)}; unexpected keys: "
            f"{few(unexpected)}; shape mismatches: {few(shape)}. Check --arch (and the number of classes)."
        )
    model.load_state_dict(sd)
    return model
