"""Lightning's overhead per fit: ``mitigate.trainers.fitting.fit`` against a plain PyTorch loop.

All contenders train the same model from the same initial weights on the same data, in the same
order (loaders with the same seeded generator), with the same optimiser (AdamW, cosine decay
per epoch), batch size, epochs and per-epoch validation (loss and accuracy): exactly what
``mitigate train`` does on the embedded default (digits, LeNet-5, 40 epochs, batch 64). They
run in the same process, rotating which goes first, and the table reports each round's ratios
and the median ratio with a 95% bootstrap interval.

The second contender, "bare", is the smallest LightningModule a user would write for the same
steps (``training_step`` returns the loss, nothing logged) under a default Trainer. It is
Lightning's own floor: what ``mitigate / bare`` adds is the cost of mitigate's module and
``fit``; the rest of ``mitigate / plain`` is Lightning's loop (hooks, closure, fetcher).
Goal: mitigate / bare <= 1.02, with mitigate / plain reported beside it. On a shared machine
single rounds vary by tens of percent, so the verdict says "meets" or "misses" only when the
whole interval is on one side of 1.02, and "within noise of" otherwise.

Each timed fit starts right after a full garbage collection: with the ~400k objects torch and
Lightning keep alive, an oldest-generation collection takes about 0.4 s, and left to chance it
lands in whichever fit happens to cross the threshold.

A last column says whether all fits ended with bit-identical weights, i.e. whether they really
do the same steps.

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
import gc
import random
import statistics
import time

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from mitigate.config import Config, TrainConfig
from mitigate.models import build_model
from mitigate.runs.data import load_data
from mitigate.trainers import ClassifierModule, MethodOptions, fit, images_loader
from mitigate.trainers.fitting import quiet_lightning


def loaders(data, batch_size: int, seed: int, validate: bool) -> tuple[DataLoader, DataLoader]:
    splits = data.splits
    train = images_loader(splits.train, batch_size=batch_size, shuffle=True, seed=seed)
    val = images_loader(splits.val, batch_size=512, shuffle=False, seed=seed)
    return train, val if validate else None


def mitigate_fit(model: nn.Module, data, t: TrainConfig, seed: int, validate: bool) -> nn.Module:
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


class BareModule(pl.LightningModule):
    """The LightningModule a user would write for ``standard`` training: no logging, no
    per-sample weights, no methods, no observers to pause."""

    def __init__(self, model: nn.Module, t: TrainConfig) -> None:
        super().__init__()
        self.model, self.t = model, t

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(1) == y).sum()

    def configure_optimizers(self):
        t = self.t
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def bare_fit(model: nn.Module, data, t: TrainConfig, seed: int, validate: bool) -> nn.Module:
    """Lightning's floor: ``BareModule`` under a Trainer with only the output switched off."""
    train, val = loaders(data, t.batch_size, seed, validate)
    with quiet_lightning():
        pl.seed_everything(seed, verbose=False)
        trainer = pl.Trainer(
            max_epochs=t.epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(BareModule(model, t), train_dataloaders=train, val_dataloaders=val)
    return model.eval()


def training_steps(data, t: TrainConfig) -> int:
    return t.epochs * -(-len(data.splits.train) // t.batch_size)


def median_ci(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median (seeded: same rounds, same interval)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


# mitigate's fit may cost this much more than the bare LightningModule under the same Trainer.
GOAL = 1.02

CONTENDERS = {"mitigate": mitigate_fit, "bare": bare_fit, "plain": plain_fit}


def compare(initial: nn.Module, data, t: TrainConfig, seed: int, repeats: int, validate: bool):
    """Print one table of rounds (one fit of each contender, first one rotating); return each
    Lightning contender's median ratio to plain, its 95% interval and ms added per step."""

    def timed(run) -> tuple[float, nn.Module]:
        model = copy.deepcopy(initial)
        # no full collection left to chance inside a timed fit (see the module docstring);
        # the young-generation collections a fit's own garbage causes still count
        gc.collect()
        start = time.perf_counter()
        trained = run(model, data, t, seed, validate)
        return time.perf_counter() - start, trained

    for run in CONTENDERS.values():  # warm-up: first-call imports and allocator growth
        timed(run)
    names = list(CONTENDERS)
    print(
        f"{'round':>5} | {'first':>8} | {'mitigate s':>10} | {'bare s':>7} | {'plain s':>7} | "
        f"{'mitigate/bare':>13} | {'mitigate/plain':>14} | {'bare/plain':>10} | same"
    )
    seconds: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {"mitigate": [], "bare": [], "mitigate/bare": []}
    for i in range(repeats):
        first = i % len(names)
        order = names[first:] + names[:first]
        results = {name: timed(CONTENDERS[name]) for name in order}
        weights = [trained.state_dict() for _, trained in results.values()]
        same = all(torch.equal(w[k], weights[0][k]) for w in weights[1:] for k in weights[0])
        for name, (s, _) in results.items():
            seconds[name].append(s)
        for name in ("mitigate", "bare"):
            ratios[name].append(results[name][0] / results["plain"][0])
        ratios["mitigate/bare"].append(results["mitigate"][0] / results["bare"][0])
        print(
            f"{i:>5} | {order[0]:>8} | {seconds['mitigate'][-1]:10.3f} | "
            f"{seconds['bare'][-1]:7.3f} | {seconds['plain'][-1]:7.3f} | "
            f"{ratios['mitigate/bare'][-1]:13.3f} | "
            f"{ratios['mitigate'][-1]:14.3f} | {ratios['bare'][-1]:10.3f} | {same}"
        )
    steps = training_steps(data, t)
    plain = seconds["plain"]
    return {
        name: (
            statistics.median(ratios[name]),
            median_ci(ratios[name]),
            (statistics.median(seconds[name]) - statistics.median(plain)) / steps * 1e3,
        )
        for name in ("mitigate", "bare")
    } | {
        "mitigate/bare": (
            statistics.median(ratios["mitigate/bare"]),
            median_ci(ratios["mitigate/bare"]),
            (statistics.median(seconds["mitigate"]) - statistics.median(seconds["bare"]))
            / steps
            * 1e3,
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--repeats", type=int, default=9, help="rounds per table")
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
    steps = training_steps(data, t)
    print(
        f"{args.arch} on digits ({len(data.splits.train)} train, {len(data.splits.val)} val), "
        f"{args.epochs} epochs x batch {t.batch_size} = {steps} steps; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    summary = []
    for validate in (True,) if args.validation_only else (True, False):
        title = "with validation every epoch (as mitigate train)" if validate else "training only"
        print(f"\n{title}")
        summary.append((title, compare(initial, data, t, args.seed, args.repeats, validate)))
    print()
    for title, result in summary:
        ratio, (low, high), added_ms = result["mitigate/bare"]
        plain, (plain_low, plain_high), plain_ms = result["mitigate"]
        bare_ratio, (bare_low, bare_high), bare_ms = result["bare"]
        verdict = "meets" if high <= GOAL else "misses" if low > GOAL else "within noise of"
        print(
            f"{title}: mitigate / bare median {ratio:.3f} (95% CI {low:.3f}-{high:.3f}, "
            f"{verdict} the {GOAL}x goal), {added_ms:+.2f} ms per training step; "
            f"mitigate / plain {plain:.3f} ({plain_low:.3f}-{plain_high:.3f}), "
            f"{plain_ms:.2f} ms per step; Lightning's floor (bare / plain) {bare_ratio:.3f} "
            f"({bare_low:.3f}-{bare_high:.3f}), {bare_ms:.2f} ms per step"
        )


if __name__ == "__main__":
    main()
