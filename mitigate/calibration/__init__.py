"""The vocabulary of PTQ calibration: a :class:`~mitigate.calibration.settings.Setting` names
the calibration data (source, size, sampling, augmentation) and method (observer, weight
granularity, engine), and parses from preset names such as ``clean-256-minmax-qnnpack``.

The sets themselves are built by :mod:`mitigate.runs.calibration`; the ``mitigate
calibrate`` sweep is :mod:`mitigate.runs.calibrate`. No torch import here.
"""

from mitigate.calibration.settings import (
    ENGINES,
    FACTORS,
    GRANULARITIES,
    OBSERVERS,
    SAMPLINGS,
    SOURCES,
    Setting,
    check_setting,
    parse_setting,
    setting_of_scheme,
)

__all__ = [
    "ENGINES",
    "FACTORS",
    "GRANULARITIES",
    "OBSERVERS",
    "SAMPLINGS",
    "SOURCES",
    "Setting",
    "check_setting",
    "parse_setting",
    "setting_of_scheme",
]
