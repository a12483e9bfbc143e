"""The steps that train: fine-tune the FP model (``finetune``, ``qat``, ``distill``) — which moves
the model the user validated — and ``qat-anchor``, which trains only the quantizers."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import DataLoader, TensorDataset

from mitigate.mitigation.context import Context, State, require_qat, require_static
from mitigate.quantization.schemes import Scheme
from mitigate.trainers.settings import TrainConfig

__all__ = ["distill", "finetune", "labelled_loader", "qat", "qat_anchor", "unlabelled_loader"]


def labelled_loader(ctx: Context) -> DataLoader:
    """Training split plus the selected inputs with their true labels; the selected inputs
    carry ``train.selected_weight`` as per-sample loss weight."""
    train = ctx.train
    weight = ctx.settings.train.selected_weight
    x = torch.cat([train.batch(slice(None)), ctx.selected.x])
    y = torch.cat([train.labels, ctx.selected.y])
    w = torch.cat([torch.ones(len(train)), torch.full((len(ctx.selected),), float(weight))])
    return _loader(ctx, TensorDataset(x, y, w))


def unlabelled_loader(ctx: Context) -> DataLoader:
    """Training inputs plus the selected ones, no labels: ``(x, -1, w)`` batches (the
    placeholder label is never read; the weight gives the selected inputs
    ``train.selected_weight``)."""
    train, k = ctx.train, len(ctx.selected)
    x = torch.cat([train.batch(slice(None)), ctx.selected.x])
    placeholder = torch.full((len(x),), -1, dtype=torch.long)
    weight = float(ctx.settings.train.selected_weight)
    w = torch.cat([torch.ones(len(train)), torch.full((k,), weight)])
    return _loader(ctx, TensorDataset(x, placeholder, w))


def _loader(ctx: Context, dataset: TensorDataset) -> DataLoader:
    from mitigate.trainers.fitting import batched_loader

    generator = torch.Generator().manual_seed(ctx.seed)
    return batched_loader(
        dataset, batch_size=ctx.settings.train.batch_size, shuffle=True, generator=generator
    )


def _settings(ctx: Context, method: str, scheme: Scheme | None) -> TrainConfig:
    """``scheme``: what QAT fake-quantizes; ``None`` for plain training (an ``ort-int8``
    model is then re-exported and quantized by its own runtime)."""
    from mitigate.quantization import scheme_label

    r = ctx.settings
    qat_scheme = scheme_label(scheme) if scheme is not None else r.train.qat_scheme
    return dataclasses.replace(
        r.train, method=method, epochs=r.epochs, lr=r.lr, qat_scheme=qat_scheme
    )


def _train(ctx: Context, state: State, method: str, labelled: bool, qat: bool) -> State:
    from mitigate.quantization import quantize
    from mitigate.trainers import train_classifier

    loader = labelled_loader(ctx) if labelled else unlabelled_loader(ctx)
    trained = train_classifier(
        state.fp_model,
        loader,
        settings=_settings(ctx, method, state.scheme if qat else None),
        seed=ctx.seed,
        teacher=ctx.original if method == "distill" else None,
        qat=qat,
        progress=ctx.progress,
    )
    quantized = (
        trained.quantized() if qat else quantize(trained.model, state.scheme, state.calibration)
    )
    from mitigate.quantization import Int8Static

    notes = {
        "method": method,
        "qat": qat,
        # What the fake quantization simulated: a recurrent model gets weight rounding only.
        "fake_quant": (
            ("weights and activations" if isinstance(state.scheme, Int8Static) else "weights")
            if qat
            else None
        ),
        "epochs": ctx.settings.epochs,
        "lr": ctx.settings.lr,
        "training_inputs": len(ctx.train) + len(ctx.selected),
        "selected_inputs": len(ctx.selected),
    }
    return dataclasses.replace(
        state,
        fp_model=trained.model,
        quantized=quantized,
        notes=notes,
        # Labels of the *selected* inputs are what a user pays a labeller for.
        used_labels=state.used_labels or (labelled and len(ctx.selected) > 0),
    )


def finetune(ctx: Context, state: State) -> State:
    return _train(ctx, state, "standard", labelled=True, qat=False)


def qat(ctx: Context, state: State) -> State:
    require_qat(state.scheme, "qat")
    return _train(ctx, state, "qat", labelled=True, qat=True)


def distill(ctx: Context, state: State) -> State:
    require_qat(state.scheme, "distill")
    return _train(ctx, state, "distill", labelled=False, qat=True)


def qat_anchor(ctx: Context, state: State) -> State:
    """QAT in which f0 is frozen and only the quantizers train (activation and weight scales):
    the KL to f0 on the training inputs plus the selected ones, and a margin hinge on f0's
    answer for the selected ones. f1 is f0 bit for bit; q1 has q0's kernels and size."""
    from mitigate.trainers.anchor import anchor_loader, train_anchor

    require_static(state.scheme, "qat-anchor")
    train, k = ctx.train, len(ctx.selected)
    inputs = torch.cat([train.batch(slice(None)), ctx.selected.x])
    flags = torch.cat([torch.zeros(len(train), dtype=torch.bool), torch.ones(k, dtype=torch.bool)])
    r = ctx.settings
    loader = anchor_loader(inputs, flags, batch_size=r.train.batch_size, seed=ctx.seed)
    result = train_anchor(
        state.fp_model,
        state.scheme,  # type: ignore[arg-type]  # checked static above
        state.calibration,
        loader,
        epochs=r.anchor_epochs,
        lr=r.anchor_lr,
        seed=ctx.seed,
        progress=ctx.progress,
    )
    notes = {
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "training_inputs": len(inputs),
        "selected_inputs": k,
        "integers_changed": result.integers_changed,
        "summary": result.summary(),
    }
    return dataclasses.replace(state, quantized=result.quantized, notes=notes)
