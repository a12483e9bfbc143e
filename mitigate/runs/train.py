"""``mitigate train``: train a base model with a Lightning Trainer and write its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mitigate.config import Config
from mitigate.runs.result import RunResult

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult(RunResult):
    """The report (``checkpoint`` and what it records: architecture, data, clean test accuracy,
    and for QAT the converted model's) and where the checkpoint was written."""

    checkpoint: Path


def train(config: Config, out: str | Path, *, progress: bool = False) -> TrainResult:
    """Train the configured architecture with ``train.method`` on the seed's training split and
    save it as ``<out>/<arch>-<method>-seed<seed>.pt``.

    ``qat`` also converts the QAT model and measures its accuracy (the checkpoint holds the
    float weights taken out of it); ``distill`` matches the standard-trained base model.

    Raises:
        MitigateError: an invalid training setting (checked before loading any data).
    """
    from mitigate.quantization import scheme_label
    from mitigate.runs.base_model import model_meta, save_model, slug, train_model
    from mitigate.runs.data import load_data, test_accuracy
    from mitigate.trainers import check_train_config

    check_train_config(config.train)
    data = load_data(config)
    trained = train_model(config, data, progress=progress)
    path = Path(out) / f"{slug(config.model.name)}-{config.train.method}-seed{config.seed}.pt"
    meta = model_meta(config, data) | {"test_accuracy": test_accuracy(trained.model, data)}
    if trained.prepared is not None and trained.scheme is not None:
        # The checkpoint holds the float weights taken out of the QAT model.
        meta |= {
            "qat_trained": True,
            "qat_scheme": scheme_label(trained.scheme),
            "qat_test_accuracy": test_accuracy(trained.quantized(), data),
        }
    save_model(path, trained.model, config, meta)
    return TrainResult({"checkpoint": str(path), **meta}, path)
