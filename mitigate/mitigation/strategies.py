"""Mitigation strategies: named recipes that turn (f0, q0, selected inputs) into (f1, q1).

Each strategy is one step ``(context, state) -> state``. A run starts from the original FP
model f0 and its quantized copy; steps can be chained (``settings+fallback``,
``settings+adaround+guard``): each starts from what the previous one produced, and the report
measures what every step contributed.

=================  ======  ======  ==========================================================
strategy           labels  f1=f0   what it does
=================  ======  ======  ==========================================================
none               no      yes     re-quantize unchanged: the noise floor (exactly zero change)
recalibrate        no      yes     redo PTQ calibration with the selected inputs added
finetune           yes     no      the study's recipe: fine-tune the FP model on training data
                                   plus the selected inputs with their true labels, re-quantize
qat                yes     no      fine-tune with fake quantization on the same data, convert
                                   (int8-dynamic / int4-weight: weight rounding only, see
                                   :mod:`mitigate.trainers.qat`; how LSTM/GRU models get QAT)
distill            no      no      QAT fine-tuning that matches f0's outputs (temperature T) on
                                   training inputs plus the selected ones
qat-anchor         no      yes     QAT in which f0 is frozen and only the quantizers (scales)
                                   train: KL to f0 plus a margin hinge on the selected inputs
settings           no      yes     search engine / activation range / per-channel / observer,
                                   scored by disagreements on the probe
fallback           no      yes     the layers to keep in float that leave the fewest probe
                                   disagreements within the budget of parameters and MACs
adaround           no      yes     re-round q's integers to reproduce f0 (learned rounding)
bias-correction    no      yes     remove each layer's mean output shift from quantization
ranges             no      yes     clip or widen each activation range to the ratio that
                                   leaves the fewest probe disagreements
guard              no      yes     answer with q, re-run f0 where q's margin is small
=================  ======  ======  ==========================================================

Steps come in three stages, and a chain keeps their order: those that build q from f and a
scheme (every step above ``adaround``), those that edit q's integers, biases or activation
ranges (``adaround``, ``bias-correction``, ``ranges``), and ``guard``, which wraps q; a later
build would undo an edit, and anything after a guard would change the model it guards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mitigate.errors import MitigateError, unknown_choice
from mitigate.mitigation import quantizer_steps, train_steps
from mitigate.mitigation.context import Context, State, StrategySettings
from mitigate.selectors.pool import Selected

__all__ = [
    "STRATEGIES",
    "Context",
    "Selected",
    "State",
    "Strategy",
    "StrategySettings",
    "parse_strategy",
    "strategy_names",
]

BUILDS, EDITS, WRAPS = 0, 1, 2  # the stages of a chain, in the order they must come


@dataclass(frozen=True)
class Strategy:
    """One registered step.

    Attributes:
        name: its name on the command line.
        step: ``(context, state) -> state``.
        uses_labels: reads the selected inputs' true labels (a labeller's work).
        trains: trains a model (so a run also trains a control with no selected inputs).
        description: one line for tables.
        uses_probe: fits to or scores on the probe (depends on the selector, not the budget).
        uses_selected: reads the budget's selected inputs (depends on selector and budget).
        keeps_f0: f1 is f0 by construction (churn 0).
        stage: :data:`BUILDS`, :data:`EDITS` or :data:`WRAPS` (see the module docstring).
    """

    name: str
    step: Callable[[Context, State], State]
    uses_labels: bool
    trains: bool
    description: str
    uses_probe: bool = False
    uses_selected: bool = False
    keeps_f0: bool = True
    stage: int = BUILDS


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "none", quantizer_steps.none, False, False, "re-quantize unchanged: the noise floor"
        ),
        Strategy(
            "recalibrate",
            quantizer_steps.recalibrate,
            False,
            False,
            "PTQ calibration + selected inputs",
            uses_selected=True,
        ),
        Strategy(
            "finetune",
            train_steps.finetune,
            True,
            True,
            "fine-tune on train + selected, labels",
            uses_selected=True,
            keeps_f0=False,
        ),
        Strategy(
            "qat",
            train_steps.qat,
            True,
            True,
            "QAT fine-tune on train + selected, labels",
            uses_selected=True,
            keeps_f0=False,
        ),
        Strategy(
            "distill",
            train_steps.distill,
            False,
            True,
            "distill-QAT from f0, no labels",
            uses_selected=True,
            keeps_f0=False,
        ),
        Strategy(
            "qat-anchor",
            train_steps.qat_anchor,
            False,
            True,
            "QAT of the quantizers only, f0 frozen",
            uses_selected=True,
        ),
        Strategy(
            "settings",
            quantizer_steps.settings,
            False,
            False,
            "search quantization settings",
            uses_probe=True,
        ),
        Strategy(
            "fallback",
            quantizer_steps.fallback,
            False,
            False,
            "layers kept in float within the budget",
            uses_probe=True,
        ),
        Strategy(
            "adaround",
            quantizer_steps.adaround,
            False,
            False,
            "learned rounding of q's integers",
            uses_probe=True,
            stage=EDITS,
        ),
        Strategy(
            "bias-correction",
            quantizer_steps.bias_correction,
            False,
            False,
            "correct each layer's mean output shift",
            uses_probe=True,
            stage=EDITS,
        ),
        Strategy(
            "ranges",
            quantizer_steps.ranges,
            False,
            False,
            "activation ranges re-picked on the probe",
            uses_probe=True,
            stage=EDITS,
        ),
        Strategy(
            "guard",
            quantizer_steps.guard,
            False,
            False,
            "re-run f0 where q's margin is small",
            stage=WRAPS,
        ),
    )
}


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def parse_strategy(text: str) -> list[Strategy]:
    """``"settings+fallback"`` (or ``settings,fallback``) -> the steps, validated."""
    names = [n.strip() for n in text.replace(",", "+").split("+") if n.strip()]
    if not names:
        raise MitigateError(f"no strategy given; valid choices: {', '.join(STRATEGIES)}")
    steps = []
    for name in names:
        if name not in STRATEGIES:
            raise unknown_choice("strategy", name, list(STRATEGIES))
        steps.append(STRATEGIES[name])
    if len(names) > 1 and "none" in names:
        raise MitigateError("strategy 'none' cannot be combined with others")
    for before, after in zip(steps, steps[1:], strict=False):
        if after.stage < before.stage or (after.stage == before.stage == WRAPS):
            what = {BUILDS: "rebuilds q from its scheme", EDITS: "edits q's integers"}
            raise MitigateError(
                f"in {'+'.join(names)!r}, {after.name!r} "
                + (
                    f"{what[after.stage]} and would undo {before.name!r}"
                    if after.stage < WRAPS
                    else "cannot follow another guard"
                )
                + "; order the steps: rebuild (settings, fallback, training ...), then edit "
                "(adaround, bias-correction, ranges), then guard"
            )
    return steps
