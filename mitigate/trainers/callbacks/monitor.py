"""Watch disagreement while a model trains: quantize a copy every N validation epochs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import Metric

from mitigate._checks import is_integer_tensor
from mitigate.disagreement import DisagreementRate, to_labels
from mitigate.errors import MitigateError, unknown_choice
from mitigate.quantization import (
    ORT_SCHEMES,
    SCHEMES,
    Int8Static,
    parse_scheme,
    quantize,
    scheme_label,
    scheme_names,
    validate_scheme,
)
from mitigate.trainers.callbacks._common import (
    ModelOption,
    UnpackBatch,
    check_model_option,
    check_positive_int,
    cpu_copy,
    is_inputs,
    resolve_model,
)
from mitigate.trainers.callbacks._common import unpack_batch as default_unpack_batch

__all__ = ["DisagreementMonitor"]


class _Accuracy(Metric):
    """Share of inputs whose predicted label equals the target; sum states, so exact under DDP."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, outputs: Tensor, target: Tensor) -> None:
        self.correct += (to_labels(outputs) == target.long()).sum().to(self.device)
        self.total += target.numel()

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.clamp_min(1).float()


@contextmanager
def _plain_grad_free() -> Iterator[None]:
    """Lightning runs validation under ``inference_mode``; tensors made there cannot be updated
    in place later, so copies, quantization and metric states are made outside it. The global
    RNG is restored afterwards (converting to int8 draws from it), so training with and without
    the monitor sees the same random numbers."""
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.no_grad():
        yield


class DisagreementMonitor(pl.Callback):
    """Log how often quantized copies of the model disagree with it, every N validation epochs.

    At the start of a measured validation epoch it deep-copies the classifier to the CPU,
    quantizes the copy with each scheme (:func:`mitigate.quantize`), runs the validation inputs
    through the FP copy and every quantized copy, and at the epoch's end logs with
    ``pl_module.log``:

    - ``val/disagreement_rate`` and ``val/quantized_accuracy`` for one scheme;
    - ``val/disagreement_rate/<scheme>`` and ``val/quantized_accuracy/<scheme>`` for several
      (``<scheme>`` is the canonical :func:`mitigate.quantization.scheme_label`; see
      :attr:`metric_names`).

    So ``EarlyStopping(monitor="val/disagreement_rate", mode="min")`` and ``ModelCheckpoint``
    can act on them. The model being trained is never touched: not its weights, its
    ``requires_grad`` flags, its training mode or its optimizer.

    Inputs: ``val_inputs`` when given, otherwise the batches of the first validation dataloader
    (index 0) as they pass, read with ``unpack_batch`` (default: ``x`` or ``(x, y, ...)``).

    Distributed: every rank measures its share of the inputs (``val_inputs[rank::world_size]``,
    or the batches its sampler gives it) and the counts are summed across ranks by the
    :class:`~mitigate.DisagreementRate` states, so every rank logs the same global value.
    All ranks log because ``EarlyStopping`` and ``ModelCheckpoint`` read
    ``trainer.callback_metrics`` on every rank (logging from rank zero only would leave the
    key missing elsewhere); loggers write from rank zero only, and the values are logged with
    ``sync_dist=True, reduce_fx="max"``, which keeps the already-global number exact.
    Lightning's ``DistributedSampler`` repeats a few validation inputs to even out the ranks;
    pass ``val_inputs`` for an exact count.

    Args:
        schemes: one scheme or several, as names (``"int8"``, ``["int8", "fp16"]``,
            ``"int8:engine=qnnpack"``; see ``mitigate.quantization.scheme_names()``) or scheme
            objects such as ``Int8Static(per_channel=False)``.
        calibration: ``float [N, ...]`` calibration inputs; required by static int8.
        val_inputs: ``float [N, ...]`` inputs or ``(inputs, labels [N])`` to measure on instead
            of the validation dataloader.
        every_n_epochs: measure at the end of every N-th training epoch (and on every
            ``trainer.validate``). With N > 1 the last value stays in ``callback_metrics``
            between measurements; count EarlyStopping's ``patience`` in validation runs
            accordingly, or keep N = 1 and set the Trainer's ``check_val_every_n_epoch``.
        log_accuracy: also log each quantized copy's accuracy; needs labels.
        model: where the classifier is in the LightningModule: an attribute name, a function
            ``pl_module -> nn.Module``, or ``None`` for ``pl_module.model`` if that is a module,
            else ``pl_module`` itself.
        unpack_batch: ``batch -> (inputs, labels or None)`` for other batch layouts.
        batch_size: batch size for ``val_inputs``.
        prog_bar: show the values in the progress bar.
        verbose: print each measurement (rank zero only).

    Raises:
        MitigateError: an unknown scheme (the message lists the valid ones), static int8
            without calibration, bad ``val_inputs``, or ``log_accuracy`` without labels.

    Example:
        >>> import torch, pytorch_lightning as pl
        >>> monitor = DisagreementMonitor(["int8", "fp16"], calibration=torch.rand(64, 1, 8, 8))
        >>> monitor.metric_names
        ['val/disagreement_rate/int8', 'val/quantized_accuracy/int8', \
'val/disagreement_rate/fp16', 'val/quantized_accuracy/fp16']
        >>> stop = pl.callbacks.EarlyStopping(monitor="val/disagreement_rate/int8", mode="min")
    """

    def __init__(
        self,
        schemes: str | Sequence[str] = ("int8",),
        calibration: Tensor | None = None,
        *,
        val_inputs: Tensor | tuple[Tensor, Tensor] | None = None,
        every_n_epochs: int = 1,
        log_accuracy: bool = True,
        model: ModelOption = None,
        unpack_batch: UnpackBatch | None = None,
        batch_size: int = 256,
        prog_bar: bool = False,
        verbose: bool = False,
    ) -> None:
        names = [schemes] if isinstance(schemes, str) else list(schemes)
        if not names:
            raise MitigateError("schemes is empty; name at least one, e.g. 'int8'")
        self.schemes = {}
        for name in names:
            if isinstance(name, str):
                scheme = parse_scheme(name)
            elif isinstance(name, tuple(SCHEMES.values())):
                scheme = validate_scheme(name)
            else:
                raise unknown_choice("quantization scheme", name, scheme_names())
            label = scheme_label(scheme)
            if label in self.schemes:
                raise MitigateError(f"scheme {label!r} is listed twice")
            self.schemes[label] = scheme
        static = [label for label, s in self.schemes.items() if isinstance(s, Int8Static)]
        if static and calibration is None:
            raise MitigateError(
                f"scheme {static[0]!r} (static int8) needs calibration inputs; pass calibration="
            )
        ort = [label for label, s in self.schemes.items() if isinstance(s, ORT_SCHEMES)]
        if ort and calibration is None:  # ORT exports with them (and ort-int8 calibrates)
            raise MitigateError(
                f"scheme {ort[0]!r} (ONNX Runtime) needs example inputs; pass calibration="
            )
        if calibration is not None and (not is_inputs(calibration) or not len(calibration)):
            raise MitigateError(
                "calibration must be a non-empty float tensor [N, ...] (token ids int64 [N, L] "
                "for text models)"
            )
        self.calibration = calibration
        self.val_inputs = _check_val_inputs(val_inputs, log_accuracy)
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.log_accuracy = bool(log_accuracy)
        self.model = check_model_option(model)
        self.unpack_batch = unpack_batch or default_unpack_batch
        self.prog_bar, self.verbose = bool(prog_bar), bool(verbose)
        # What a resumed fit carries over (see state_dict).
        self.measurements = 0
        self.last_epoch: int | None = None
        self.last: dict[str, float] = {}
        # Per measured epoch: the FP copy, its quantized copies, and their metrics.
        self._active = False
        self._fp: nn.Module | None = None
        self._copies: dict[str, nn.Module] = {}
        self._rates: dict[str, DisagreementRate] = {}
        self._accuracies: dict[str, _Accuracy] = {}

    # ---- names and state ----------------------------------------------------------------

    def _names(self, label: str) -> tuple[str, str]:
        suffix = "" if len(self.schemes) == 1 else f"/{label}"
        return f"val/disagreement_rate{suffix}", f"val/quantized_accuracy{suffix}"

    @property
    def metric_names(self) -> list[str]:
        """The keys this callback logs, in order."""
        return [
            name
            for label in self.schemes
            for name in self._names(label)[: 2 if self.log_accuracy else 1]
        ]

    @property
    def state_key(self) -> str:
        return self._generate_state_key(schemes=list(self.schemes), every=self.every_n_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "measurements": self.measurements,
            "last_epoch": self.last_epoch,
            "last": dict(self.last),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.measurements = int(state_dict["measurements"])
        self.last_epoch = state_dict["last_epoch"]
        self.last = dict(state_dict["last"])

    # ---- hooks --------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        resolve_model(pl_module, self.model)  # a wrong attribute name fails before training

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != "fit":
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = self._due(trainer)
        if not self._active:
            return
        with _plain_grad_free():
            self._fp = cpu_copy(resolve_model(pl_module, self.model))
            self._copies = {
                label: quantize(self._fp, scheme, self.calibration)
                for label, scheme in self.schemes.items()
            }
            self._rates = {label: DisagreementRate() for label in self.schemes}
            self._accuracies = {label: _Accuracy() for label in self.schemes}

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._active and self.val_inputs is None and dataloader_idx == 0:
            self._measure(*self.unpack_batch(batch))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        with _plain_grad_free():
            if self.val_inputs is not None:
                x, y = self.val_inputs
                rank, world = trainer.global_rank, trainer.world_size
                x, y = x[rank::world], (y[rank::world] if y is not None else None)
                for start in range(0, len(x), self.batch_size):
                    end = start + self.batch_size
                    self._measure(x[start:end], y[start:end] if y is not None else None)
            values: dict[str, Tensor] = {}
            for label in self.schemes:
                if not self._rates[label].update_called:  # an empty shard still joins the sum
                    empty = torch.empty(0, dtype=torch.int64)
                    self._rates[label].update(empty, empty)
                    self._accuracies[label].update(empty, empty)
                rate_name, accuracy_name = self._names(label)
                # Summed across ranks on the module's device (NCCL needs CUDA tensors).
                values[rate_name] = self._rates[label].to(pl_module.device).compute()
                if self.log_accuracy:
                    metric = self._accuracies[label].to(pl_module.device)
                    values[accuracy_name] = metric.compute()
        for name, value in values.items():
            pl_module.log(
                name,
                value,
                on_step=False,
                on_epoch=True,
                prog_bar=self.prog_bar,
                sync_dist=True,
                reduce_fx="max",
            )
        self.last = {name: float(value) for name, value in values.items()}
        self.last_epoch = trainer.current_epoch
        self.measurements += 1
        self._active, self._fp, self._copies = False, None, {}
        if self.verbose:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in self.last.items())
            rank_zero_info(f"DisagreementMonitor epoch {trainer.current_epoch}: {shown}")

    def _measure(self, x: Tensor, y: Tensor | None) -> None:
        if self.log_accuracy and y is None:
            raise MitigateError(
                "log_accuracy=True needs labelled validation batches (x, y); "
                "pass log_accuracy=False or val_inputs=(x, y)"
            )
        with _plain_grad_free():
            x = x.detach().to("cpu", torch.float32 if x.is_floating_point() else x.dtype).clone()
            y = y.detach().cpu().clone() if y is not None else None
            fp_logits = self._fp(x)  # type: ignore[misc]
            for label, copy in self._copies.items():
                q_logits = copy(x)
                self._rates[label].update(fp_logits, q_logits)
                if self.log_accuracy:
                    self._accuracies[label].update(q_logits, y)  # type: ignore[arg-type]


def _check_val_inputs(
    val_inputs: object, log_accuracy: bool
) -> tuple[Tensor, Tensor | None] | None:
    if val_inputs is None:
        return None
    x, y = (val_inputs, None) if isinstance(val_inputs, Tensor) else (None, None)
    if isinstance(val_inputs, (tuple, list)) and len(val_inputs) == 2:
        x, y = val_inputs
    if not is_inputs(x):
        raise MitigateError(
            "val_inputs must be float inputs [N, ...] (token ids int64 [N, L] for text models) "
            "or a pair (inputs, labels)"
        )
    if y is not None and not is_integer_tensor(y, (x.shape[0],)):
        raise MitigateError(f"val_inputs labels must be integer labels of shape [{x.shape[0]}]")
    if log_accuracy and y is None:
        raise MitigateError(
            "log_accuracy=True needs labels: pass val_inputs=(inputs, labels) or log_accuracy=False"
        )
    return x, y
