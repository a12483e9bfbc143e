"""Lightning training: one module for every method, a fit that handles the pitfalls, and
QAT in explicit steps (prepare, train, convert, extract the float model)."""

from mitigate.trainers.adversarial import pgd_attack
from mitigate.trainers.distill import distill_kl
from mitigate.trainers.fit import fit, images_loader, quiet_lightning
from mitigate.trainers.methods import METHODS, Method, MethodOptions, get_method, method_names
from mitigate.trainers.mixup import mixup_cross_entropy, sample_mixup
from mitigate.trainers.module import ClassifierModule, unpack_batch
from mitigate.trainers.qat import (
    FreezeQAT,
    convert_qat,
    extract_float,
    is_qat_prepared,
    pause_observers,
    prepare_qat_model,
)
from mitigate.trainers.train import Trained, check_train_config, train_classifier

__all__ = [
    "METHODS",
    "ClassifierModule",
    "FreezeQAT",
    "Method",
    "MethodOptions",
    "Trained",
    "check_train_config",
    "convert_qat",
    "distill_kl",
    "extract_float",
    "fit",
    "get_method",
    "images_loader",
    "is_qat_prepared",
    "method_names",
    "mixup_cross_entropy",
    "pause_observers",
    "pgd_attack",
    "prepare_qat_model",
    "quiet_lightning",
    "sample_mixup",
    "train_classifier",
    "unpack_batch",
]
