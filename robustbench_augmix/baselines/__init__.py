"""The AugMix paper's baseline methods and ablations (Cutout, Mixup, CutMix, AutoAugment, RandAugment,
TrivialAugment, PGD adversarial training, AugMix without JSD, JSD with crop/flip): the method table
(:mod:`.methods`, no torch), the batched kernels with their samplers (:mod:`.kernels`), the keyed
torchvision policies (:mod:`.policies`) and PGD (:mod:`.adversarial`). Imports run one way:
methods <- kernels, policies, adversarial."""

from .methods import METHOD_TABLE, METHODS, Method, get_method, method_names

__all__ = ["METHODS", "METHOD_TABLE", "Method", "get_method", "method_names"]
