"""Lightning callbacks that watch and reduce disagreement inside any training loop.

- :class:`DisagreementMonitor` logs how often quantized copies disagree with the model.
- :class:`DisagreementMining` adds the pool inputs most likely to disagree to the training set.
"""

from mitigate.trainers.callbacks.mining import DisagreementMining, MinedDataset
from mitigate.trainers.callbacks.monitor import DisagreementMonitor

__all__ = ["DisagreementMining", "DisagreementMonitor", "MinedDataset"]
