"""One run per command: ``config (or session) -> Result``, called by the CLI and Python alike.

Each ``mitigate/runs/<command>.py`` holds one command's run, a function of the command's name
(``mitigate.runs.evaluate.evaluate``, also ``mitigate.evaluate``) returning a
:class:`~mitigate.runs.result.RunResult` with the ``report``. :mod:`.session` builds what a
seed's runs share (data, groups, base model, calibration set, the pool), :mod:`.calibration`
every calibration set and preset, and :mod:`.cells` the resumable grid behind ``compare`` and
``calibrate``. Names resolve lazily: importing this package does not import torch.
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    "CalibrateResult": ".calibrate",
    "CompareResult": ".compare",
    "EvaluateResult": ".evaluate",
    "RetrainResult": ".retrain",
    "RunResult": ".result",
    "ScoreResult": ".score",
    "SensitivityResult": ".sensitivity",
    "Session": ".session",
    "TrainResult": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
