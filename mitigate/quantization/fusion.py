"""Which batch norms fold into the layer before them: FX's fusion when preparing QAT, and
ONNX export's folding, follow the same rule."""

from __future__ import annotations

from torch import nn

__all__ = ["batchnorm_owners"]


def batchnorm_owners(
    model: nn.Module,
    layers: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear),
) -> dict[str, str]:
    """``{batch norm name: layer name}`` for every batch norm fed directly by one of ``layers``
    whose only user it is: the pairs that fold into one layer.

    Raises:
        Exception: whatever FX raises on a model it cannot trace.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> batchnorm_owners(net)
        {'1': '0'}
    """
    from torch.fx import Node, Tracer

    modules = dict(model.named_modules())
    owners: dict[str, str] = {}
    for node in Tracer().trace(model).nodes:
        if node.op != "call_module" or not isinstance(
            modules.get(node.target), nn.modules.batchnorm._BatchNorm
        ):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), layers)
            and len(source.users) == 1
        ):
            owners[str(node.target)] = str(source.target)
    return owners
