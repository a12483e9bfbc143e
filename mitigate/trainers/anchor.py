"""Anchored QAT: ``f0`` frozen, only the quantizers train, so ``f1 = f0`` bit for bit.

(Unless biases are learned too: then ``q1`` quantizes ``f0`` with shifted biases, and the
result says so; ``f0`` itself never changes.)

Plain QAT fine-tunes the float weights through fake quantization; the float model the user
validated (``f0``) moves, and disagreements counted against it multiply. Here nothing of
``f0`` moves. Starting from the scheme's normal PTQ (``q0``), training learns only how ``f0``
is quantized — activation scales and zero points, per-channel weight scales, optionally
per-weight rounding (AdaRound-style) and biases — so that the int8 model agrees with ``f0``:

    loss = KL(f0 || q) at temperature T on every input
           + hinge_weight * max(0, margin - (z[y0] - max_{j != y0} z[j])) on selected inputs

with ``z`` the simulated int8 model's logits and ``y0`` ``f0``'s top-1 (labels are never
read). The hinge keeps ``f0``'s answer with some room where it is fragile: the selected inputs
are those a selector flagged as likely to disagree.

The result ``q1`` is a normal static-int8 :class:`~mitigate.quantization.QuantizedModel` made
by torch.ao's own ``convert_fx`` from the learned parameters: same modules, same kernels and
(within a few bytes) the same size as ``q0``. See :mod:`mitigate.quantization.learnable_int8` for
the quantizers and the conversion.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    >>> x = torch.rand(64, 1, 8, 8)
    >>> result = train_anchor(net, "int8", x[:32], anchor_loader(x, batch_size=32), epochs=1)
    >>> result.fp_model is net, result.fp_identical, result.quantized.label
    (True, True, 'int8')
    >>> len(result.losses)
    1
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from mitigate.errors import MitigateError
from mitigate.quantization.api import QuantizedModel
from mitigate.quantization.learnable_int8 import (
    LearnableInt8,
    convert_learnable,
    converted_mismatches,
    prepare_learnable,
)
from mitigate.quantization.schemes import Int8Static, Scheme, parse_scheme, scheme_label
from mitigate.trainers.anchor_loss import AnchorOptions, anchor_batch, anchor_loader, anchor_loss
from mitigate.trainers.fitting import fit
from mitigate.trainers.methods import MethodOptions
from mitigate.trainers.module import ClassifierModule

__all__ = [
    "AnchorModule",
    "AnchorOptions",
    "AnchorResult",
    "LayerChange",
    "PointChange",
    "anchor_batch",
    "anchor_loader",
    "anchor_loss",
    "train_anchor",
]


# ---- the LightningModule -------------------------------------------------------------------


class AnchorModule(ClassifierModule):
    """Trains a :class:`~mitigate.quantization.learnable.LearnableInt8`'s quantizers against a
    frozen ``f0``; nothing else has a gradient.

    ``model`` is the learnable's simulation (always in eval mode: ``f0``'s dropout stays off),
    ``teacher`` a frozen eval copy of ``f0``. The optimiser (Adam, cosine decay over
    ``epochs``) holds only ``learnable.parameters()``; every learned quantity lives in units
    where 1 is a natural step (log-scales, zero points and rounding offsets in integer steps),
    so one learning rate serves them all. After every step rounding offsets are clipped to
    ``[0, 1]`` and floored activation scales kept at their floor. Never rewrites ``forward``
    and never converts in place: converting is
    :func:`mitigate.quantization.learnable.convert_learnable`, a separate step.

    Rounding makes the loss piecewise constant and its straight-through gradient noisy: from
    one epoch to the next the loss can go up. With ``keep_best`` (a loader, usually the
    training one) the module evaluates the loss on it before training and after every epoch,
    and at the end of the fit puts back the parameters that scored lowest (``q0``'s own when
    nothing beat them).

    Attributes:
        train_losses, kl_losses, hinge_losses: the mean loss and its two terms per epoch
            (averaged over the epoch's steps while the parameters moved).
        eval_losses: with ``keep_best``, the loss on it before training and after each epoch.
        best_epoch: the epoch whose parameters were kept (``0``: the starting ones), or
            ``None`` without ``keep_best``.
    """

    def __init__(
        self,
        learnable: LearnableInt8,
        teacher: nn.Module,
        *,
        options: AnchorOptions | None = None,
        lr: float = 1e-2,
        epochs: int = 1,
        keep_best: Iterable | None = None,
    ) -> None:
        options = options or AnchorOptions()
        super().__init__(
            learnable.simulation,
            method="distill",
            options=MethodOptions(distill_temperature=options.temperature),
            teacher=teacher,
            lr=lr,
            weight_decay=0.0,
            epochs=epochs,
        )
        self.anchor = options
        self.learnable = learnable
        self.kl_losses: list[float] = []
        self.hinge_losses: list[float] = []
        self.eval_losses: list[float] = []
        self.best_epoch: int | None = None
        self._keep_best = keep_best
        self._best: list[Tensor] | None = None

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, weights, selected = anchor_batch(batch)
        with torch.no_grad():
            reference = self.teacher(x)
        o = self.anchor
        total, kl, hinge = anchor_loss(
            self.model(x),
            reference,
            selected,
            weights,
            temperature=o.temperature,
            margin=o.margin,
            hinge_weight=o.hinge_weight,
        )
        self._sums["train"] += total.detach() * len(x)
        self._sums["kl"] += kl * len(x)
        self._sums["hinge"] += hinge * len(x)
        self._counts["train"] += len(x)
        return total

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.learnable.clamp_()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._sums["kl"], self._sums["hinge"] = torch.zeros(()), torch.zeros(())

    def on_train_epoch_end(self) -> None:
        n = self._counts["train"]
        if n:
            self.kl_losses.append(float(self._sums["kl"]) / n)
            self.hinge_losses.append(float(self._sums["hinge"]) / n)
        super().on_train_epoch_end()
        self._consider(self.current_epoch + 1)

    def on_train_start(self) -> None:
        self._consider(0)

    def on_train_end(self) -> None:
        if self._best is not None:
            with torch.no_grad():
                for param, best in zip(self.learnable.parameters(), self._best, strict=True):
                    param.copy_(best)

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> float:
        """The loss (weighted mean of KL + hinge, as trained) on every batch of ``loader``,
        with the current parameters."""
        o = self.anchor
        total, weight = 0.0, 0.0
        for batch in loader:
            x, weights, selected = anchor_batch(batch)
            loss, _, _ = anchor_loss(
                self.model(x),
                self.teacher(x),
                selected,
                weights,
                temperature=o.temperature,
                margin=o.margin,
                hinge_weight=o.hinge_weight,
            )
            n = float(weights.sum()) if weights is not None else float(len(x))
            total, weight = total + float(loss) * n, weight + n
        return total / weight if weight > 0 else 0.0

    def _consider(self, epoch: int) -> None:
        """Evaluate on ``keep_best`` and remember the parameters if they are the best yet."""
        if self._keep_best is None:
            return
        loss = self.evaluate(self._keep_best)
        self.eval_losses.append(loss)
        if self.best_epoch is None or loss < min(self.eval_losses[:-1]):
            self.best_epoch = epoch
            self._best = [p.detach().clone() for p in self.learnable.parameters()]

    def configure_optimizers(self):  # type: ignore[override]
        optimizer = torch.optim.Adam(self.learnable.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


# ---- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerChange:
    """What anchored QAT changed in one quantized Conv/Linear layer.

    Attributes:
        name: the layer's module name in ``f0`` (``conv1``, ``classifier.fc1``).
        old_scales, new_scales: float32 ``[out]`` (``[1]`` per tensor): ``q0``'s and ``q1``'s.
        weights: how many weights the layer has.
        integers_changed: weights whose int8 value differs from ``q0``'s.
        rounding_changed: weights not rounded to nearest at the new scales (learned rounding).
        bias_changed: whether the layer's float bias was learned away from ``f0``'s.
    """

    name: str
    old_scales: Tensor
    new_scales: Tensor
    weights: int
    integers_changed: int
    rounding_changed: int
    bias_changed: bool

    @property
    def max_scale_change(self) -> float:
        """The largest relative change of a scale, ``max |new / old - 1|``."""
        return float((self.new_scales.double() / self.old_scales.double() - 1).abs().max())


@dataclass(frozen=True)
class PointChange:
    """One activation quantization point: ``q0``'s and ``q1``'s scale and zero point."""

    name: str
    old_scale: float
    new_scale: float
    old_zero_point: int
    new_zero_point: int

    @property
    def moved(self) -> bool:
        """Whether the scale or the zero point changed."""
        return (self.old_scale, self.old_zero_point) != (self.new_scale, self.new_zero_point)


@dataclass(frozen=True)
class AnchorResult:
    """What :func:`train_anchor` produced.

    Attributes:
        quantized: ``q1``, the static-int8 model converted from the learned quantizers.
        fp_model: ``f0`` itself (the model passed in, unchanged): the float model of the pair.
        baseline: ``q0``, the scheme's normal PTQ model the training started from.
        scheme: the static int8 scheme.
        layers: per quantized layer, what changed (scales, integers, rounding, bias).
        activations: per activation point, old and new qparams.
        epochs: epochs trained.
        losses, kl, hinge: mean training loss and its two terms per epoch.
        eval_losses: with ``keep_best``, the loss on the loader before training and after
            each epoch (empty otherwise).
        best_epoch: the epoch whose parameters ``q1`` uses (``0``: ``q0``'s), or ``None``
            without ``keep_best`` or training.
        fp_identical: ``q1`` quantizes ``f0``'s own weights and biases (``False`` only when
            learned biases moved).
        options: the options used.
        seconds: wall time of the whole call (calibration, training, conversion).
        notes: what a reader of the numbers should know (learned biases; a reduced range
            trained without its scale floor).
    """

    quantized: QuantizedModel
    fp_model: nn.Module
    baseline: QuantizedModel
    scheme: Int8Static
    layers: tuple[LayerChange, ...]
    activations: tuple[PointChange, ...]
    epochs: int
    losses: tuple[float, ...]
    kl: tuple[float, ...]
    hinge: tuple[float, ...]
    eval_losses: tuple[float, ...]
    best_epoch: int | None
    fp_identical: bool
    options: AnchorOptions
    seconds: float
    notes: tuple[str, ...] = field(default=())

    @property
    def integers_changed(self) -> int:
        """Weights whose int8 value differs from ``q0``'s, over all layers."""
        return sum(layer.integers_changed for layer in self.layers)

    @property
    def rounding_changed(self) -> int:
        """Weights not rounded to nearest at their new scale, over all layers."""
        return sum(layer.rounding_changed for layer in self.layers)

    def summary(self) -> str:
        """A few lines: what was learned and how the loss went."""
        lines = [
            f"anchored QAT ({scheme_label(self.scheme)}), {self.epochs} epochs, "
            f"{self.seconds:.1f} s; f0 unchanged"
            + ("" if self.fp_identical else " (but q1 uses learned biases)"),
        ]
        if self.losses:
            lines.append(
                f"loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g} "
                f"(KL {self.kl[0]:.4g} -> {self.kl[-1]:.4g}, "
                f"hinge {self.hinge[0]:.4g} -> {self.hinge[-1]:.4g})"
            )
        if self.best_epoch is not None:
            lines.append(
                f"kept epoch {self.best_epoch} (loss on the inputs "
                f"{self.eval_losses[0]:.4g} -> {self.eval_losses[self.best_epoch]:.4g})"
            )
        for layer in self.layers:
            lines.append(
                f"  {layer.name}: scales moved up to {100 * layer.max_scale_change:.2f}%, "
                f"{layer.integers_changed}/{layer.weights} integers changed, "
                f"{layer.rounding_changed} not rounded to nearest"
            )
        moved = [p for p in self.activations if p.moved]
        lines.append(f"  activation points changed: {len(moved)}/{len(self.activations)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


# ---- the entry point -----------------------------------------------------------------------


def train_anchor(
    model: nn.Module,
    scheme: Scheme | str,
    calibration: Tensor | Iterable[Tensor],
    loader: Iterable,
    *,
    epochs: int = 15,
    lr: float = 1e-2,
    temperature: float = 1.0,
    margin: float = 0.0,
    hinge_weight: float = 1.0,
    learn_activations: bool = True,
    learn_weight_scales: bool = True,
    learn_rounding: bool = False,
    learn_bias: bool = False,
    floor_activation_scales: bool | None = None,
    keep_best: bool = True,
    calibration_batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> AnchorResult:
    """Quantize ``model`` (``f0``) to static int8 and train only its quantizers to agree with it.

    Args:
        model: the float classifier ``f0``; never modified (not even its mode or gradients).
        scheme: a static int8 scheme, object or name (``"int8"``, ``"int8:engine=qnnpack"``).
        calibration: inputs for the PTQ observers (``float [N, ...]`` or batches): training
            starts from exactly what ``quantize(model, scheme, calibration)`` gives.
        loader: unlabelled batches (see :func:`anchor_batch`: ``x``, ``(x, y, w)`` as
            strategies build them, ``(x, w, flags)`` as :func:`anchor_loader` does).
        epochs: passes over ``loader`` (``0``: ``q1`` is ``q0``).
        lr: Adam's peak learning rate (cosine decay) for every learned quantity: log-scales,
            zero points and rounding offsets are in units of one step, so ``1e-2`` moves a
            scale about 1% a step.
        temperature, margin, hinge_weight, learn_*, floor_activation_scales: see
            :class:`AnchorOptions`.
        keep_best: evaluate the loss on ``loader`` before training and after every epoch, and
            keep the parameters that scored lowest (see :class:`AnchorModule`); ``q1`` is
            then never worse than ``q0`` on the training objective.
        calibration_batch_size: batch size when ``calibration`` is one tensor.
        seed: seeds the run; the same seed gives the same ``q1`` on one machine (give the
            loader its own seeded generator, as :func:`anchor_loader` does).
        progress: show Lightning's progress bar.

    Returns:
        An :class:`AnchorResult`; ``result.quantized`` is ``q1``.

    Raises:
        MitigateError: a scheme other than static int8, bad options, no calibration input, an
            empty loader, or a malformed batch.
    """
    started = time.perf_counter()
    scheme = _anchor_scheme(scheme)
    if not isinstance(model, nn.Module):
        raise MitigateError(f"train_anchor needs a torch.nn.Module, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise MitigateError(f"anchor epochs must be an integer >= 0, got {epochs!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise MitigateError(f"anchor lr must be finite and >= 0, got {lr}")
    options = AnchorOptions(
        temperature=temperature,
        margin=margin,
        hinge_weight=hinge_weight,
        learn_activations=learn_activations,
        learn_weight_scales=learn_weight_scales,
        learn_rounding=learn_rounding,
        learn_bias=learn_bias,
        floor_activation_scales=floor_activation_scales,
    )
    if loader is None:
        raise MitigateError("train_anchor needs a loader of unlabelled batches; got None")
    if epochs > 0:
        _check_loader(loader)
    floor = (
        scheme.effective_reduce_range
        if floor_activation_scales is None
        else bool(floor_activation_scales)
    )
    learnable = prepare_learnable(
        model,
        scheme,
        calibration,
        batch_size=calibration_batch_size,
        learn_activations=learn_activations,
        learn_weight_scales=learn_weight_scales,
        learn_rounding=learn_rounding,
        learn_bias=learn_bias,
        floor_activation_scales=floor,
    )
    module = AnchorModule(
        learnable,
        model,
        options=options,
        lr=lr,
        epochs=epochs,
        keep_best=loader if keep_best else None,
    )
    if epochs > 0:
        fit(module, loader, epochs=epochs, seed=seed, progress=progress)  # type: ignore[arg-type]
    quantized = convert_learnable(learnable)
    problems = converted_mismatches(learnable, quantized)
    if problems:  # a torch.ao change, not a user error: say exactly what
        raise RuntimeError(
            "the converted model does not use the learned parameters: " + "; ".join(problems)
        )
    layers = _layer_changes(learnable)
    shifted = [layer.name for layer in layers if layer.bias_changed]
    notes: list[str] = []
    if shifted:
        notes.append(
            "biases were learned: q1 quantizes f0 with shifted biases in "
            + ", ".join(shifted)
            + "; f0 itself is unchanged"
        )
    if scheme.effective_reduce_range and not floor and learn_activations:
        notes.append(
            "reduced range without a scale floor: activation scales learned finer than "
            "calibrated may use more than 7 bits, which fbgemm can saturate on CPUs without VNNI"
        )
    return AnchorResult(
        quantized=quantized,
        fp_model=model,
        baseline=learnable.baseline,
        scheme=scheme,
        layers=layers,
        activations=_point_changes(learnable),
        epochs=epochs,
        losses=tuple(module.train_losses),
        kl=tuple(module.kl_losses),
        hinge=tuple(module.hinge_losses),
        eval_losses=tuple(module.eval_losses),
        best_epoch=module.best_epoch,
        fp_identical=not shifted,
        options=options,
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
    )


def _anchor_scheme(scheme: Scheme | str) -> Int8Static:
    parsed = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    if not isinstance(parsed, Int8Static):
        label = scheme_label(parsed) if hasattr(parsed, "kind") else repr(parsed)
        raise MitigateError(
            "anchored QAT learns static int8 quantizers only (scheme int8[:options], e.g. "
            f"int8 or int8:engine=qnnpack); got {label!r}"
        )
    return parsed


def _check_loader(loader: Iterable) -> None:
    """Cheap checks that need no iteration (iterating would move a seeded loader's
    generator): an empty DataLoader, or a TensorDataset whose tensors are malformed."""
    if isinstance(loader, DataLoader):
        dataset = loader.dataset
        if hasattr(dataset, "__len__") and len(dataset) == 0:  # type: ignore[arg-type]
            raise MitigateError("the anchor loader holds no inputs")
        if isinstance(dataset, TensorDataset):
            anchor_batch(tuple(t[:1] for t in dataset.tensors))
    elif isinstance(loader, Sequence):
        if len(loader) == 0:
            raise MitigateError("the anchor loader holds no batches")
        anchor_batch(loader[0])


def _layer_changes(learnable: LearnableInt8) -> tuple[LayerChange, ...]:
    from mitigate.quantization._quiet import quiet_backend
    from mitigate.quantization.static import _engine

    changes = []
    with quiet_backend(), _engine(learnable.scheme.engine):
        for name, quantizer in learnable.weights.items():
            old = learnable.baseline.inner.get_submodule(name).weight()
            old_scales = (
                old.q_per_channel_scales().float()
                if quantizer.axis is not None
                else torch.tensor([old.q_scale()], dtype=torch.float32)
            )
            weight = learnable.float_weight(name)
            integers = quantizer.integers(weight)
            changes.append(
                LayerChange(
                    name=name,
                    old_scales=old_scales,
                    new_scales=quantizer.flat_scales(),
                    weights=weight.numel(),
                    integers_changed=int((integers != old.int_repr()).sum()),
                    rounding_changed=int((integers != quantizer.nearest(weight)).sum()),
                    bias_changed=name in learnable.biases
                    and bool((learnable.biases[name].delta != 0).any()),
                )
            )
    return tuple(changes)


def _point_changes(learnable: LearnableInt8) -> tuple[PointChange, ...]:
    changes = []
    for name, point in learnable.activations.items():
        scale, zero = point.calculate_qparams()
        changes.append(
            PointChange(
                name=name,
                old_scale=float(point.init_scale),
                new_scale=float(scale),
                old_zero_point=int(point.init_zero_point),
                new_zero_point=int(zero),
            )
        )
    return tuple(changes)
