"""Watch disagreement inside a plain PyTorch training loop.

After every epoch: quantize a copy of the model to int8 (the model itself is untouched) and
measure on held-out digits how often the copy's answer differs, with the torchmetrics-style
``mitigate.DisagreementRate``. Run: ``python examples/plain_pytorch.py`` (a few seconds, no
download: the digits ship with scikit-learn).
"""

import torch
from torch import nn
from torch.nn import functional as F

import mitigate
from mitigate.data import load_digits

torch.manual_seed(0)
digits = load_digits()
x, y = digits.float_batch(slice(None)), digits.labels  # [1797, 1, 8, 8] in [0, 1], [1797]
order = torch.randperm(len(x))
train, val = order[:1300], order[1300:]
calibration = x[train[:256]]  # static int8 observes these to choose its scales

model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
metric = mitigate.DisagreementRate(num_classes=10, per_class=True, flips=True)

for epoch in range(5):
    model.train()
    for batch in train[torch.randperm(len(train))].split(64):
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()

    model.eval()
    int8 = mitigate.quantize(model, "int8", calibration)
    metric.reset()
    with torch.no_grad():
        for batch in val.split(128):
            metric.update(model(x[batch]), int8(x[batch]), target=y[batch])
    out = metric.compute()
    print(
        f"epoch {epoch}: disagreement rate {out['rate']:.4f} "
        f"(correct->wrong {out['correct_to_wrong']:.4f}, "
        f"worst class {int(out['per_class'].argmax())})"
    )

flipped = mitigate.find_disagreements(model, int8, x[val])
print(f"int8 disagrees on {len(flipped)} of {len(val)} validation digits: {flipped.tolist()}")
