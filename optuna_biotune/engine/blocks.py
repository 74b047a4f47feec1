"""Partitions of a model into functional blocks, and the model's forward as a chain of stages.

BioTune gives every block ``b = 0..B`` one importance gene (paper eq. 2-5). A :class:`Block` is
a name and the dotted parameter-name prefixes it owns; a partition covers every parameter of
the model exactly once (:func:`partition` checks this).

Default partitions (in forward order; the last block is the new head):

- torchvision ResNet-18/34/50/101: the authors' 6 blocks ``stem`` (``conv1``, ``bn1``),
  ``layer1`` .. ``layer4``, ``fc``.
- torchvision DenseNet-121: the authors' 9 blocks ``stem`` (``conv0``, ``norm0``),
  ``denseblock1``, ``transition1``, .., ``denseblock4`` (with ``norm5``), ``classifier``.
- VGG-16(-BN): ``conv1`` .. ``conv5`` (the conv stages ending in a max-pool), ``fc`` (fc6,
  fc7), ``head`` (the new fc8).
- MobileNetV2/V3: the ``features`` grouped by output resolution (``stage1`` ..), then
  ``classifier``.
- EfficientNet-B0..B7 and ConvNeXt-T: one block per ``features`` child, then ``classifier``.
- ViT-B/16: ``embed`` (patch projection, class token, position embedding), one block per
  encoder layer, ``head`` (final layer norm and the new head).
- timm EfficientNets (the default ``efficientnet_lite0``): ``stem``, ``blocks.0`` ..
  ``blocks.6``, ``conv_head`` (``conv_head``, ``bn2``), ``classifier``; other timm models by
  their ``group_matcher(coarse=True)`` stages with the head as its own last block.

:func:`stages` splits the forward of the known families into a chain of modules whose
composition equals ``model(x)``; the activation cache cuts it after the frozen prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from optuna_biotune.errors import UsageError

PartitionSpec = Sequence[str | Sequence[str]] | Mapping[str, str | Sequence[str]]


def _owns(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class Block:
    """A named group of parameters: those whose dotted names start with one of ``prefixes``."""

    name: str
    prefixes: tuple[str, ...]

    def owns(self, param_name: str) -> bool:
        """Whether the parameter (or module) called ``param_name`` belongs to this block."""
        return any(_owns(p, param_name) for p in self.prefixes)

    def named_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The block's ``(name, parameter)`` pairs in ``model``."""
        return [(n, p) for n, p in model.named_parameters() if self.owns(n)]

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The block's parameters in ``model``."""
        return [p for _, p in self.named_parameters(model)]

    def num_params(self, model: nn.Module) -> int:
        """Number of scalar parameters in the block."""
        return sum(p.numel() for p in self.parameters(model))


# --------------------------------------------------------------------------- default partitions


def _family(model: nn.Module) -> str:
    import torchvision.models as tvm

    kinds = (
        (tvm.ResNet, "resnet"),
        (tvm.DenseNet, "densenet"),
        (tvm.VGG, "vgg"),
        (tvm.MobileNetV2, "mobilenet"),
        (tvm.MobileNetV3, "mobilenet"),
        (tvm.EfficientNet, "features"),
        (tvm.ConvNeXt, "features"),
        (tvm.VisionTransformer, "vit"),
    )
    for cls, kind in kinds:
        if isinstance(model, cls):
            return kind
    module = type(model).__module__
    if module.startswith("timm."):
        from timm.models.efficientnet import EfficientNet

        return "timm_efficientnet" if isinstance(model, EfficientNet) else "timm"
    return "unknown"


def _sequential(model: nn.Module, name: str) -> nn.Sequential:
    """The ``nn.Sequential`` submodule ``name`` of a model whose family fixes that type."""
    return cast(nn.Sequential, model.get_submodule(name))


def _resolution_groups(features: nn.Sequential, size: int = 64) -> list[list[int]]:
    """Indices of ``features`` children grouped by the spatial size of their outputs."""
    groups: list[list[int]] = []
    last = None
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            param = next(features.parameters())
            x = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
            for i, child in enumerate(features):
                x = child(x)
                if x.shape[-1] != last:
                    groups.append([])
                    last = x.shape[-1]
                groups[-1].append(i)
    finally:
        features.train(was_training)
    return groups


def _default_blocks(model: nn.Module) -> list[Block]:
    kind = _family(model)
    if kind == "resnet":
        return [
            Block("stem", ("conv1", "bn1")),
            *(Block(f"layer{i}", (f"layer{i}",)) for i in range(1, 5)),
            Block("fc", ("fc",)),
        ]
    if kind == "densenet":
        blocks = [Block("stem", ("features.conv0", "features.norm0"))]
        for i in range(1, 4):
            blocks.append(Block(f"denseblock{i}", (f"features.denseblock{i}",)))
            blocks.append(Block(f"transition{i}", (f"features.transition{i}",)))
        blocks.append(Block("denseblock4", ("features.denseblock4", "features.norm5")))
        blocks.append(Block("classifier", ("classifier",)))
        return blocks
    if kind == "vgg":
        current: list[str] = []
        blocks = []
        for i, child in enumerate(_sequential(model, "features")):
            current.append(f"features.{i}")
            if isinstance(child, nn.MaxPool2d):
                blocks.append(Block(f"conv{len(blocks) + 1}", tuple(current)))
                current = []
        if current:
            blocks.append(Block(f"conv{len(blocks) + 1}", tuple(current)))
        n = len(_sequential(model, "classifier"))
        blocks.append(Block("fc", tuple(f"classifier.{i}" for i in range(n - 1))))
        blocks.append(Block("head", (f"classifier.{n - 1}",)))
        return blocks
    if kind == "mobilenet":
        groups = _resolution_groups(_sequential(model, "features"))
        return [
            *(
                Block(f"stage{j + 1}", tuple(f"features.{i}" for i in group))
                for j, group in enumerate(groups)
            ),
            Block("classifier", ("classifier",)),
        ]
    if kind == "features":
        n_features = len(_sequential(model, "features"))
        return [
            *(Block(f"features.{i}", (f"features.{i}",)) for i in range(n_features)),
            Block("classifier", ("classifier",)),
        ]
    if kind == "vit":
        layers = [name for name, _ in model.get_submodule("encoder.layers").named_children()]
        return [
            Block("embed", ("conv_proj", "class_token", "encoder.pos_embedding")),
            *(Block(name, (f"encoder.layers.{name}",)) for name in layers),
            Block("head", ("encoder.ln", "heads")),
        ]
    if kind == "timm_efficientnet":
        n_blocks = len(_sequential(model, "blocks"))
        return [
            Block("stem", ("conv_stem", "bn1")),
            *(Block(f"blocks.{i}", (f"blocks.{i}",)) for i in range(n_blocks)),
            Block("conv_head", ("conv_head", "bn2")),
            Block("classifier", ("classifier",)),
        ]
    if kind == "timm":
        return _timm_blocks(model)
    raise UsageError(
        f"no default partition for {type(model).__name__}; pass `partition` as a list of "
        "module-name prefixes (one entry per block)."
    )


def _cover(names: list[str], others: list[str]) -> tuple[str, ...]:
    """Shortest dotted prefixes that cover ``names`` and none of ``others``."""
    prefixes: list[str] = []
    for name in names:
        if any(_owns(p, name) for p in prefixes):
            continue
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            candidate = ".".join(parts[:k])
            if not any(_owns(candidate, o) for o in others):
                prefixes.append(candidate)
                break
    return tuple(prefixes)


def _timm_blocks(model: nn.Module) -> list[Block]:
    from timm.models import group_parameters

    from optuna_biotune.engine.models import head_name

    try:
        head = head_name(model)
    except UsageError:
        cfg = cast(dict[str, Any], model.pretrained_cfg)  # timm keeps its config as a dict
        head = cfg.get("classifier", "head")
        head = head[0] if isinstance(head, (list, tuple)) else head
    if not hasattr(model, "group_matcher"):
        raise UsageError(
            f"timm model {type(model).__name__} has no group_matcher; pass `partition` as "
            "module-name prefixes."
        )
    group_matcher = cast(Callable[..., dict[str, Any]], model.group_matcher)
    matcher = group_matcher(coarse=True)
    all_names = [n for n, _ in model.named_parameters()]
    groups = group_parameters(model, matcher)
    blocks = []
    for gid, names in groups.items():
        names = [n for n in names if not _owns(head, n)]
        if not names:
            continue
        others = [n for n in all_names if n not in set(names)]
        prefixes = _cover(names, others)
        if gid == 0 and "stem" in matcher:
            label = "stem"
        else:
            label = "+".join(prefixes) if len(prefixes) <= 3 else f"{prefixes[0]}+..."
        blocks.append(Block(label, prefixes))
    blocks.append(Block(head, (head,)))
    return blocks


def _user_blocks(spec: PartitionSpec) -> list[Block]:
    items: list[tuple[str, tuple[str, ...]]] = []
    if isinstance(spec, Mapping):
        for name, prefixes in spec.items():
            prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
            items.append((str(name), prefixes))
    else:
        for entry in spec:
            prefixes = (entry,) if isinstance(entry, str) else tuple(entry)
            items.append(("+".join(prefixes), prefixes))
    for name, prefixes in items:
        if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
            raise UsageError(
                f"`partition` block {name!r} needs non-empty module-name prefixes (strings)."
            )
    return [Block(name, prefixes) for name, prefixes in items]


def check_partition(model: nn.Module, blocks: Sequence[Block]) -> None:
    """Raise :class:`UsageError` unless every parameter is in exactly one block."""
    if not blocks:
        raise UsageError("`partition` must hold at least one block.")
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        raise UsageError(f"`partition` block names must be unique, got {names}.")
    owners: dict[str, list[str]] = {}
    for pname, _ in model.named_parameters():
        owners[pname] = [b.name for b in blocks if b.owns(pname)]
    orphans = [p for p, o in owners.items() if not o]
    if orphans:
        raise UsageError(
            f"`partition` leaves {len(orphans)} parameters in no block (e.g. {orphans[0]!r}); "
            "add a prefix that covers them."
        )
    shared = [(p, o) for p, o in owners.items() if len(o) > 1]
    if shared:
        p, o = shared[0]
        raise UsageError(
            f"`partition` puts {p!r} in several blocks {o}; make the prefixes disjoint."
        )
    empty = [b.name for b in blocks if not any(b.name in o for o in owners.values())]
    if empty:
        raise UsageError(f"`partition` blocks {empty} own no parameter; fix their prefixes.")


def partition(model: nn.Module, spec: PartitionSpec | None = None) -> list[Block]:
    """Split ``model`` into blocks: the family default, or a user-supplied ``spec``.

    Args:
        model: A model from ``models.build_model`` (or any torchvision/timm classifier).
        spec: ``None`` for the default partition of the model's family; or a list with one
            entry per block, each a module-name prefix or a list of them (the block is named
            by its prefixes joined with ``+``); or a mapping ``block name -> prefixes``.

    Returns:
        The blocks, each parameter of ``model`` in exactly one of them.
    """
    if spec is None or (isinstance(spec, str) and spec == "default"):
        blocks = _default_blocks(model)
    elif isinstance(spec, str):
        raise UsageError(
            f"`partition` {spec!r} is not a list of prefixes; use None for the default or "
            "e.g. [['conv1', 'bn1'], 'layer1', ...]."
        )
    else:
        blocks = _user_blocks(spec)
    check_partition(model, blocks)
    return blocks


def block_param_groups(
    model: nn.Module, blocks: Sequence[Block], weights: Sequence[float], *, base_lr: float
) -> list[dict[str, Any]]:
    """One optimizer group per trained block, ``lr_b = base_lr * W_b`` (paper eq. 2, 5).

    Blocks whose weight is 0 (frozen, ``S_b = 0``) get no group, so ``train.fit`` freezes them.
    """
    if len(weights) != len(blocks):
        raise UsageError(f"`weights` must have one entry per block ({len(blocks)}).")
    named = list(model.named_parameters())  # one pass over the model, not one per block
    groups = []
    for block, w in zip(blocks, weights, strict=True):
        if w > 0:
            params = [p for n, p in named if block.owns(n)]
            groups.append({"params": params, "lr": base_lr * float(w), "name": block.name})
    return groups


# ------------------------------------------------------------------------------------ stages


class _Apply(nn.Module):
    """A stage that applies a parameter-free function (pooling, flattening, token select)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], label: str) -> None:
        super().__init__()
        self.fn = fn
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.label


class _VitEmbed(nn.Module):
    """ViT patch embedding + class token + position embedding (shares the model's tensors)."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.conv_proj = vit.get_submodule("conv_proj")
        self.class_token = vit.get_parameter("class_token")
        self.pos_embedding = vit.get_parameter("encoder.pos_embedding")
        self.dropout = vit.get_submodule("encoder.dropout")
        # torchvision's VisionTransformer._process_input; a list keeps the model out of the
        # submodules.
        process = cast(Callable[[torch.Tensor], torch.Tensor], vit._process_input)
        self._process = [process]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._process[0](x)
        token = self.class_token.expand(x.shape[0], -1, -1)
        return self.dropout(torch.cat([token, x], dim=1) + self.pos_embedding)


class _TimmHead(nn.Module):
    """timm EfficientNet head: global pool, dropout, classifier (as ``forward_head``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.global_pool = model.get_submodule("global_pool")
        self.drop_rate = float(getattr(model, "drop_rate", 0.0))
        self.classifier = model.get_submodule("classifier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(x, 1)


def stages(model: nn.Module) -> list[nn.Module] | None:
    """The model's forward as a chain of modules (``model(x) == chain(x)``), or ``None``.

    Stages share the model's parameters. Known for every family with a default partition
    except generic timm models (those train through ``model.forward``, without the cache).
    """
    kind = _family(model)
    m = model.get_submodule
    out: list[nn.Module]
    if kind == "resnet":
        return [
            nn.Sequential(m("conv1"), m("bn1"), m("relu"), m("maxpool")),
            m("layer1"),
            m("layer2"),
            m("layer3"),
            m("layer4"),
            nn.Sequential(m("avgpool"), _Apply(_flatten, "flatten"), m("fc")),
        ]
    if kind == "densenet":
        f = model.get_submodule("features").get_submodule
        out = [nn.Sequential(f("conv0"), f("norm0"), f("relu0"), f("pool0"))]
        for i in range(1, 4):
            out += [f(f"denseblock{i}"), f(f"transition{i}")]
        out.append(nn.Sequential(f("denseblock4"), f("norm5"), nn.ReLU()))
        out.append(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), _Apply(_flatten, "flatten"), m("classifier"))
        )
        return out
    if kind == "vgg":
        out = []
        current: list[nn.Module] = []
        for child in _sequential(model, "features"):
            current.append(child)
            if isinstance(child, nn.MaxPool2d):
                out.append(nn.Sequential(*current))
                current = []
        if current:
            out.append(nn.Sequential(*current))
        cls = list(_sequential(model, "classifier"))
        out.append(nn.Sequential(m("avgpool"), _Apply(_flatten, "flatten"), *cls[:-1]))
        out.append(cls[-1])
        return out
    if kind in ("mobilenet", "features"):
        pool = m("avgpool") if hasattr(model, "avgpool") else nn.AdaptiveAvgPool2d(1)
        features = _sequential(model, "features")
        if kind == "mobilenet":
            out = [
                nn.Sequential(*(features[i] for i in group))
                for group in _resolution_groups(features)
            ]
        else:
            out = list(features)
        if type(model).__name__ == "ConvNeXt":
            out.append(nn.Sequential(pool, m("classifier")))
        else:
            out.append(nn.Sequential(pool, _Apply(_flatten, "flatten"), m("classifier")))
        return out
    if kind == "vit":
        return [
            _VitEmbed(model),
            *_sequential(model, "encoder.layers"),
            nn.Sequential(m("encoder.ln"), _Apply(_cls_token, "class token"), m("heads")),
        ]
    if kind == "timm_efficientnet":
        return [
            nn.Sequential(m("conv_stem"), m("bn1")),
            *_sequential(model, "blocks"),
            nn.Sequential(m("conv_head"), m("bn2")),
            _TimmHead(model),
        ]
    return None


def _cls_token(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0]


def frozen_prefix_length(
    chain: Sequence[nn.Module], frozen: Sequence[nn.Parameter] | set[int]
) -> int:
    """Number of leading stages of ``chain`` all of whose parameters are in ``frozen``.

    Parameter-free stages count as frozen; the prefix stops at the first stage holding a
    trained parameter (everything before it can be computed once and cached).
    """
    ids = frozen if isinstance(frozen, set) else {id(p) for p in frozen}
    for i, stage in enumerate(chain):
        if any(id(p) not in ids for p in stage.parameters()):
            return i
    return len(chain)


__all__ = [
    "Block",
    "PartitionSpec",
    "block_param_groups",
    "check_partition",
    "frozen_prefix_length",
    "partition",
    "stages",
]
