"""mitigate: measure and remove disagreements between a model and its quantized copies.

A disagreement is an input on which a full-precision classifier and its quantized copy give
different top-1 labels. The names below are the public API for your own code and training
loops; they load lazily, so ``import mitigate`` (and ``mitigate --help``) stays fast and does
not import torch until a name is used.

- Quantize and compare: :func:`quantize`, :func:`find_disagreements`, :func:`scan`.
- Measure in a training loop: :class:`DisagreementRate` (a torchmetrics ``Metric``) and
  :mod:`mitigate.functional` (its stateless twins).
- Find likely disagreements without labels: :func:`compute_score`, :data:`SCORES`,
  :func:`select`.
- Lightning callbacks: :class:`DisagreementMonitor`, :class:`DisagreementMining`.
- Mitigate: :data:`STRATEGIES` (named recipes, combinable with ``+``), :func:`account`; what
  in the quantized model causes disagreements: :func:`layer_sensitivity`,
  :func:`search_fallback` (within a budget), :func:`greedy_fallback`, :func:`search_settings`;
  changing only the quantizer: :func:`adaround`, :func:`search_ranges`; at run time:
  :class:`GuardedModel` with :func:`choose_threshold`.
- The runs behind the CLI, one per command (``config -> result`` with ``.report``):
  :func:`evaluate`, :func:`score`, :func:`sensitivity`, :func:`retrain`, :func:`compare`,
  :func:`calibrate`, :func:`train`; :func:`load_config`, :class:`Config`, :class:`Session`.
  They also run on your own model and data: ``mitigate.retrain(model=net,
  data=mitigate.Data(train=..., pool=..., test=...), strategy="settings+fallback")``.

Example:
    >>> import torch, mitigate
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> x = torch.rand(512, 1, 8, 8)
    >>> int8 = mitigate.quantize(net, "int8", calibration=x[:128])
    >>> metric = mitigate.DisagreementRate()
    >>> for batch in x.split(128):
    ...     metric.update(net(batch), int8(batch))
    >>> rate = metric.compute()
    >>> int(rate * len(x)) == len(mitigate.find_disagreements(net, int8, x))
    True
"""

from mitigate._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # quantize, and compare a model with its copies
    "QuantizedModel": ".quantization",
    "parse_scheme": ".quantization",
    "quantize": ".quantization",
    "scheme_names": ".quantization",
    "find_disagreements": ".disagreement",
    "Predictions": ".scanning",
    "scan": ".scanning",
    # the metric (its functional twins are the submodule mitigate.functional)
    "DisagreementRate": ".disagreement",
    # scores that rank unlabelled inputs, and budgeted selection
    "SCORES": ".selectors",
    "compute_score": ".selectors",
    "score_names": ".selectors",
    "select": ".selectors",
    # Lightning callbacks
    "DisagreementMining": ".trainers.callbacks",
    "DisagreementMonitor": ".trainers.callbacks",
    # the runs behind the CLI: config -> result, one per command
    "Config": ".config",
    "load_config": ".config",
    "Data": ".data.own",
    "MitigateError": ".errors",
    "MitigateWarning": ".errors",
    "Session": ".runs.session",
    "evaluate": ".runs.evaluate",
    "score": ".runs.score",
    "sensitivity": ".runs.sensitivity",
    "retrain": ".runs.retrain",
    "compare": ".runs.compare",
    "calibrate": ".runs.calibrate",
    "train": ".runs.train",
    # mitigation: strategies, the accounting of removed and introduced disagreements, and
    # what in the quantized model causes disagreements
    "STRATEGIES": ".mitigation.strategies",
    "parse_strategy": ".mitigation.strategies",
    "strategy_names": ".mitigation.strategies",
    "account": ".mitigation.accounting",
    "layer_sensitivity": ".mitigation.sensitivity",
    "greedy_fallback": ".mitigation.fallback",
    "search_fallback": ".mitigation.fallback",
    "GuardedModel": ".mitigation.guard",
    "choose_threshold": ".mitigation.guard",
    "guard_margin": ".mitigation.guard",
    "save_guard": ".mitigation.guard",
    "load_guard": ".mitigation.guard",
    "deployment_cost": ".mitigation.deployment",
    "adaround": ".mitigation.adaround",
    "search_ranges": ".mitigation.ranges",
    "search_settings": ".mitigation.settings_search",
}
_SUBMODULES = ("functional",)
__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])

_lazy_getattr, _lazy_dir = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    value = _lazy_getattr(name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted({*_lazy_dir(), *_SUBMODULES, "__version__"})
