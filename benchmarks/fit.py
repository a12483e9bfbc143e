"""Lightning's overhead per fit: ``mitigate.trainers.fit`` against a plain PyTorch loop.

Both sides train the same model from the same initial weights on the same data, in the same
order (loaders with the same seeded generator), with the same optimiser (AdamW, cosine decay
per epoch), batch size, epochs and per-epoch validation (loss and accuracy): exactly what
``mitigate train`` does on the embedded default (digits, LeNet-5, 40 epochs, batch 64). They
run in the same process, alternating which goes first, and the table reports each pair's
ratio and the median ratio. Goal: Lightning / plain <= 1.2. The summary also gives the fastest
Lightning fit over the fastest plain one: on a shared machine a neighbour only ever adds time,
so that ratio is the least disturbed (the estimator ``timeit`` recommends).

A last column says whether the two fits ended with bit-identical weights, i.e. whether the
plain loop really does the same steps.

Threads: by default one intra-op thread. These models are tiny, and with torch's default (one
thread per core) a machine busy with other work can make every step many times slower, which
swamps what is being measured. ``--threads 0`` keeps torch's default.

Two tables: with per-epoch validation (what ``mitigate train`` runs) and training only.

Usage:
    python benchmarks/fit.py [--epochs 40] [--batch-size 64] [--repeats 9] [--threads 1]
                             [--validation-only]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from mitigate.config import Config, TrainConfig
from mitigate.models import build_model
from mitigate.pipeline import load_data
from mitigate.trainers import ClassifierModule, MethodOptions, fit, images_loader


def loaders(data, batch_size: int, seed: int, validate: bool) -> tuple[DataLoader, DataLoader]:
    splits = data.splits
    train = images_loader(splits.train, batch_size=batch_size, shuffle=True, seed=seed)
    val = images_loader(splits.val, batch_size=512, shuffle=False, seed=seed)
    return train, val if validate else None


def lightning_fit(model: nn.Module, data, t: TrainConfig, seed: int, validate: bool) -> nn.Module:
    train, val = loaders(data, t.batch_size, seed, validate)
    module = ClassifierModule(
        model,
        method=t.method,
        options=MethodOptions.from_config(t),
        lr=t.lr,
        weight_decay=t.weight_decay,
        epochs=t.epochs,
    )
    return fit(module, train, val, epochs=t.epochs, seed=seed)


def plain_fit(model: nn.Module, data, t: TrainConfig, seed: int, validate: bool) -> nn.Module:
    """The loop a user would write for ``standard`` training, step for step the same, and
    keeping the same records: each epoch's mean training loss, validation loss and accuracy."""
    train, val = loaders(data, t.batch_size, seed, validate)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
    history = []
    for _ in range(t.epochs):
        model.train()
        loss_sum, seen = torch.zeros(()), 0
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(x)
            seen += len(x)
        schedule.step()
        history.append(float(loss_sum) / seen)
        if val is None:
            continue
        model.eval()
        val_loss, correct, seen = torch.zeros(()), torch.zeros(()), 0
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                val_loss += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                seen += len(x)
        history.append((float(val_loss) / seen, float(correct) / seen))
    return model.eval()


def compare(initial: nn.Module, data, t: TrainConfig, seed: int, repeats: int, validate: bool):
    """Print one table of alternating pairs; return the median ratio and ms added per step."""

    def timed(run) -> tuple[float, nn.Module]:
        model = copy.deepcopy(initial)
        start = time.perf_counter()
        trained = run(model, data, t, seed, validate)
        return time.perf_counter() - start, trained

    timed(lightning_fit)  # warm-up: first-call imports and allocator growth
    timed(plain_fit)
    print(
        f"{'pair':>4} | {'first':>9} | {'lightning s':>11} | {'plain s':>8} | {'ratio':>6} | same"
    )
    ratios, lightning_s, plain_s = [], [], []
    for i in range(repeats):
        order = (lightning_fit, plain_fit) if i % 2 == 0 else (plain_fit, lightning_fit)
        results = {run.__name__: timed(run) for run in order}
        (lt, lm), (pt, pm) = results["lightning_fit"], results["plain_fit"]
        ls, ps = lm.state_dict(), pm.state_dict()
        same = all(torch.equal(ls[k], ps[k]) for k in ls)
        ratios.append(lt / pt)
        lightning_s.append(lt)
        plain_s.append(pt)
        first = "lightning" if i % 2 == 0 else "plain"
        print(f"{i:>4} | {first:>9} | {lt:11.3f} | {pt:8.3f} | {lt / pt:6.3f} | {same}")
    steps = t.epochs * -(-len(data.splits.train) // t.batch_size)
    overhead_ms = (statistics.median(lightning_s) - statistics.median(plain_s)) / steps * 1e3
    return statistics.median(ratios), min(lightning_s) / min(plain_s), overhead_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--repeats", type=int, default=9, help="pairs of fits per table")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads; 0 = default")
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation-only", action="store_true", help="skip the training-only table"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    t = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    data = load_data(Config(seed=args.seed))
    c, h, w = data.input_shape
    torch.manual_seed(args.seed)
    initial = build_model(args.arch, in_channels=c, image_size=(h, w), num_classes=10)
    steps = args.epochs * -(-len(data.splits.train) // t.batch_size)
    print(
        f"{args.arch} on digits ({len(data.splits.train)} train, {len(data.splits.val)} val), "
        f"{args.epochs} epochs x batch {t.batch_size} = {steps} steps; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    summary = []
    for validate in (True,) if args.validation_only else (True, False):
        title = "with validation every epoch (as mitigate train)" if validate else "training only"
        print(f"\n{title}")
        ratio, best_ratio, overhead_ms = compare(
            initial, data, t, args.seed, args.repeats, validate
        )
        summary.append((title, ratio, best_ratio, overhead_ms))
    print()
    for title, ratio, best_ratio, overhead_ms in summary:
        verdict = "meets" if ratio <= 1.2 else "misses"
        print(
            f"{title}: median ratio {ratio:.3f} ({verdict} the 1.2x goal; fastest vs fastest "
            f"{best_ratio:.3f}), Lightning adds {overhead_ms:.2f} ms per training step"
        )


if __name__ == "__main__":
    main()
