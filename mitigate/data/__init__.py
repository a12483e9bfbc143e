"""Datasets (images and texts), seeded splits, synthetic shifts and the measurement groups.

Names resolve lazily so that importing a registry does not import torch.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "LabelledData": ".base",
    "LabelledImages": ".images",
    "LabelledText": ".text.dataset",
    "DATASETS": ".loaders",
    "load_dataset": ".loaders",
    "load_digits": ".digits",
    "load_mnist": ".idx",
    "load_fashion_mnist": ".idx",
    "load_cifar10": ".cifar",
    "load_npz": ".npz",
    "Data": ".dataset",
    "SplitSizes": ".splits",
    "Splits": ".splits",
    "make_splits": ".splits",
    "Group": ".evalset",
    "Batch": ".evalset",
    "build_groups": ".evalset",
    "iter_batches": ".evalset",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
