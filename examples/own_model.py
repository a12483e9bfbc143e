"""Your own model and data through mitigate's runs: evaluate, then retrain with a strategy.

``SmallCNN`` is not in mitigate's model zoo, and the data is not a built-in dataset: the
digits upsampled to 16x16, split by this file. The same model and data work from the command
line, named by their import paths (run from the repository root)::

    mitigate evaluate --model examples.own_model:build --data examples.own_model:data

Run: ``python examples/own_model.py`` (about a minute on 2 cores, no download).
"""

import torch
from torch import nn
from torch.nn import functional as F

import mitigate
from mitigate.data import load_digits


class SmallCNN(nn.Module):
    """Two convolutions and a linear head: any traceable classifier works the same way."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(32 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def build(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The factory ``--model examples.own_model:build`` names: mitigate passes the data's
    channel and class counts because the signature asks for them."""
    return SmallCNN(in_channels, num_classes)


def data() -> mitigate.Data:
    """The splits ``--data examples.own_model:data`` names: 16x16 digits in [0, 1]."""
    digits = load_digits()
    x = F.interpolate(digits.float_batch(slice(None)), size=16, mode="bilinear").clamp(0, 1)
    y = digits.labels
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    names, sizes = ("train", "calibration", "pool", "test"), (900, 100, 400, 397)
    part = dict(zip(names, order.split(sizes), strict=True))
    return mitigate.Data(
        **{name: (x[rows], y[rows]) for name, rows in part.items()}, classes=digits.classes
    )


def train(model: nn.Module, splits: mitigate.Data, epochs: int = 15) -> nn.Module:
    """Your own training loop: mitigate never needs to train the model it is given."""
    torch.manual_seed(0)
    x, y = splits.train
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[rows]), y[rows]).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    splits = data()
    net = train(build(), splits)
    shifts = {
        "shifts__families": ["gaussian-noise", "contrast", "defocus-blur", "rotate", "fog"],
        "shifts__severities": [2, 4],
    }

    measured = mitigate.evaluate(model=net, data=splits, schemes=["int8", "fp16"], **shifts)
    total = measured.report["totals"]["all"]
    for scheme in measured.report["schemes"]:
        print(f"{scheme}: {total['disagreements'][scheme]} disagreements in {total['n']} inputs")

    result = mitigate.retrain(
        model=net, data=splits, strategy="settings+fallback", budget=100, **shifts
    )
    total = result.report["totals"]["all"]
    print(
        f"settings+fallback: {total['before']} -> {total['after']} disagreements "
        f"({total['removed']} removed, {total['introduced']} introduced, churn {total['churn']})"
    )


if __name__ == "__main__":
    main()
