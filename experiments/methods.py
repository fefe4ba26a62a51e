"""Methods: the one registry of what a config compares, a label weighting scheme or a loss.

A method is a weighting scheme of `ltweights.weights` trained with weighted sigmoid BCE (none,
inverse, inverse_sqrt, class_balanced, proposed), or a loss of `ltweights.losses` trained with no
label weighting so that it is compared as published (focal, asymmetric, distribution_balanced,
logit_adjusted). Configs (`<task>_<method>`), `python -m experiments.run --list`, config
validation and the report's row order all derive from `METHODS`, whose order is the report's.

Adding a loss:
  1. write the elementwise loss in `ltweights/losses.py` (keyword-only hyperparameters; the
     trainer supplies `pos_weight`/`neg_weight`, `positives`/`num_examples` or `prior` when the
     function takes them) and its tests;
  2. add it to `LOSSES` below and one `Method` entry to `METHODS` with its paper's defaults.
The configs `<task>_<your method>` then exist at every tier, and `--set loss_params.<name>=...`
is validated against your function's keyword parameters.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

from ltweights import losses

# Loss functions by their own name: the registry key is the function's __name__, so a config's
# `loss` field names the function it calls.
LOSSES: dict[str, Callable[..., Any]] = {
    fn.__name__: fn
    for fn in (
        losses.weighted_sigmoid_bce,
        losses.sigmoid_focal,
        losses.asymmetric,
        losses.distribution_balanced,
        losses.logit_adjusted_bce,
    )
}
# Loss arguments the trainer supplies from the logits, labels, scheme weights and label counts;
# a config's loss_params may not set them.
SUPPLIED_LOSS_ARGS = (
    "logits",
    "labels",
    "pos_weight",
    "neg_weight",
    "positives",
    "num_examples",
    "prior",
)

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method: the scheme and loss it trains with, and their default parameters.

    Attributes:
      name: the config axis value, the `<method>` of `<task>_<method>`.
      scheme: `ltweights.weights.SCHEMES` key.
      loss: `LOSSES` key, the loss function's own name.
      scheme_params, loss_params: keyword arguments of the scheme and the loss.
      sweep: dotted config path -> values swept by default (one variant each).
      variant: `str.format` template over the config naming the report row.
      doc: one line for `--list` and `--dry-run`.
      model: config.model fields the method changes (the `linear` floor's model).
      balanced_data: trains on the task's balanced data, every label at the head count (the
        `balanced` ceiling): the method's only cut-off is data.head_count, and it exists only
        for tasks whose data has a head count.
      reference: a reference row of the report (a floor or ceiling, not a compared method).
    """

    name: str
    scheme: str
    loss: str
    doc: str
    variant: str = "{scheme}"
    scheme_params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    loss_params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    sweep: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: _EMPTY)
    model: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    balanced_data: bool = False
    reference: bool = False


# beta = 0.9 trains like `none` and 0.9999 like `inverse` (the two ends of the effective number;
# the first sweep measured both within 0.003 mAP of them), so the default sweep keeps the middle.
PROPOSED_BETAS = (0.99, 0.999)
_BCE = losses.weighted_sigmoid_bce.__name__


def _method(name: str, scheme: str, loss: str, doc: str, **kwargs: Any) -> Method:
    """A Method whose parameter and sweep mappings are read-only."""
    for key in ("scheme_params", "loss_params", "sweep", "model"):
        if key in kwargs:
            kwargs[key] = types.MappingProxyType(dict(kwargs[key]))
    return Method(name, scheme, loss, doc, **kwargs)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _method(
            "linear",
            "none",
            _BCE,
            "Reference floor: a linear model on the pixels (experiments.models.Linear), plain "
            "BCE, same data and schedule; every network must beat it.",
            variant="linear",
            model={"name": "linear"},
            reference=True,
        ),
        _method("none", "none", _BCE, "No weighting: plain sigmoid BCE (the first baseline)."),
        _method(
            "inverse",
            "inverse",
            _BCE,
            "Inverse frequency: pos_j = n-_j / n+_j, neg_j = 1 (the second baseline).",
        ),
        _method(
            "inverse_sqrt",
            "inverse_sqrt",
            _BCE,
            "Square-root inverse frequency: pos_j = sqrt(n-_j / n+_j), neg_j = 1.",
        ),
        _method(
            "class_balanced",
            "class_balanced",
            _BCE,
            "Class-balanced (Cui et al., CVPR 2019) on both terms, beta = 0.999; sweep it with "
            "--set sweep.scheme_params.beta=[0.99,0.9999].",
            variant="class_balanced(beta={scheme_params.beta:g})",
            scheme_params={"beta": 0.999},
        ),
        _method(
            "proposed",
            "proposed",
            _BCE,
            "Proposed effective-number positive weighting pos_j = E(n-_j) / E(n+_j); sweeps "
            "beta over 0.99 and 0.999 (--set sweep.scheme_params.beta=[0.9,0.9999] for the ends).",
            variant="proposed(beta={scheme_params.beta:g})",
            scheme_params={"beta": 0.999},
            sweep={"scheme_params.beta": PROPOSED_BETAS},
        ),
        _method(
            "focal",
            "none",
            losses.sigmoid_focal.__name__,
            "Sigmoid focal loss (Lin et al., ICCV 2017), gamma = 2, no alpha.",
            variant="focal(gamma={loss_params.gamma:g})",
            loss_params={"gamma": 2.0},
        ),
        _method(
            "asymmetric",
            "none",
            losses.asymmetric.__name__,
            "Asymmetric loss (Ridnik et al., ICCV 2021), gamma_pos = 0, gamma_neg = 4, clip = "
            "0.05.",
            variant="asymmetric(gamma_neg={loss_params.gamma_neg:g},clip={loss_params.clip:g})",
            loss_params={"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05},
        ),
        _method(
            "distribution_balanced",
            "none",
            losses.distribution_balanced.__name__,
            "Distribution-balanced loss (Wu et al., ECCV 2020) with the paper's defaults.",
            variant="distribution_balanced",
            loss_params={"alpha": 0.1, "beta": 10.0, "mu": 0.3, "kappa": 0.05, "lam": 2.0},
        ),
        _method(
            "logit_adjusted",
            "none",
            losses.logit_adjusted_bce.__name__,
            "Logit-adjusted BCE (Menon et al., ICLR 2021) per label, tau = 1.",
            variant="logit_adjusted(tau={loss_params.tau:g})",
            loss_params={"tau": 1.0},
        ),
        _method(
            "balanced",
            "none",
            _BCE,
            "Reference ceiling: the network with plain BCE on the balanced catalog (every label "
            "at data.head_count training positives), what long-tail methods try to approach.",
            variant="balanced",
            balanced_data=True,
            reference=True,
        ),
    )
}


def applies_to(method: Method, data_fields) -> bool:
    """Whether `method` exists for a task whose config.data has `data_fields`."""
    return not method.balanced_data or "head_count" in data_fields


def get_method(name: str) -> Method:
    """The method called `name`; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; valid methods: {', '.join(METHODS)}.")
    return METHODS[name]
