"""Lightning training: one module for every method, a fit that handles the pitfalls, and
QAT in explicit steps (prepare, train, convert, extract the float model)."""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "pgd_attack": ".adversarial",
    "distill_kl": ".distill",
    "fit": ".fitting",
    "images_loader": ".fitting",
    "quiet_lightning": ".fitting",
    **{name: ".methods" for name in ("METHODS", "Method", "MethodOptions", "get_method")},
    "method_names": ".methods",
    "mixup_cross_entropy": ".mixup",
    "sample_mixup": ".mixup",
    "ClassifierModule": ".module",
    "unpack_batch": ".module",
    **{
        name: ".qat"
        for name in (
            "FreezeQAT",
            "convert_qat",
            "extract_float",
            "is_qat_prepared",
            "pause_observers",
            "prepare_qat_model",
        )
    },
    "TrainConfig": ".settings",
    "AnchorResult": ".anchor",
    "train_anchor": ".anchor",
    "Trained": ".train",
    "check_train_config": ".train",
    "train_classifier": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
