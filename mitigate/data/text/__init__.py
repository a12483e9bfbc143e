"""Text data: our own tokenizer and vocabulary, labelled texts, loaders and text shifts.

Names resolve lazily so that importing a registry does not import torch.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "LabelledText": ".dataset",
    "Vocabulary": ".vocab",
    "build_vocabulary": ".vocab",
    "tokenize": ".vocab",
    "TEXT_SHIFTS": ".shifts",
    "apply_text_shift": ".shifts",
    "text_shift_names": ".shifts",
    "load_imdb": ".loaders",
    "load_text_csv": ".loaders",
    "load_tweets": ".loaders",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
