"""Methods: the one registry of what a config compares, a label weighting scheme or a loss.

A method is a weighting scheme of `ltweights.weights` trained with weighted sigmoid BCE (none,
inverse, inverse_sqrt, class_balanced, proposed), or a loss of `ltweights.losses` trained with no
label weighting so that it is compared as published (focal, asymmetric, distribution_balanced,
logit_adjusted). Configs (`<task>_<method>`), `python -m experiments.run --list`, config
validation and the report's row order all derive from `METHODS`, whose order is the report's.

Adding a loss:
  1. write the elementwise loss, `fn(logits, labels, *, ...) -> [..., C]`, in
     `ltweights/losses.py` or any module, with keyword-only hyperparameters and its tests; the
     trainer supplies `pos_weight`/`neg_weight`, `positives`, `num_examples` and `prior` when
     the function takes them (`loss_inputs`, the one place that computes them);
  2. add one `_method(...)` entry to `METHODS` below, passing the function and its paper's
     defaults; `LOSSES` derives from `METHODS`.
The configs `<task>_<your method>` then exist at every tier, and `--set loss_params.<name>=...`
is validated against your function's keyword parameters. A loss that needs another per-label
input adds its supplier to `_PER_LABEL_INPUTS` (or `_STATIC_INPUTS`) below.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ltweights import losses, weights

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method: the scheme and loss it trains with, and their default parameters.

    Attributes:
      name: the config axis value, the `<method>` of `<task>_<method>`.
      scheme: `ltweights.weights.SCHEMES` key.
      loss_fn: the elementwise loss, `fn(logits, labels, **supplied, **loss_params)`; its own
        name is the method's `loss`, the `LOSSES` key and a config's `loss` field.
      scheme_params, loss_params: keyword arguments of the scheme and the loss.
      vary: dotted config path -> values varied by default (one variant each).
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
    loss_fn: Callable[..., Any]
    doc: str
    variant: str = "{scheme}"
    scheme_params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    loss_params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    vary: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: _EMPTY)
    model: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    balanced_data: bool = False
    reference: bool = False

    @property
    def loss(self) -> str:
        """The loss function's own name: the `LOSSES` key and a config's `loss` field."""
        return self.loss_fn.__name__


# beta = 0.9 trains like `none` and 0.9999 like `inverse` (the two ends of the effective number;
# the first sweep measured both within 0.003 mAP of them), so the default `vary` keeps the middle.
PROPOSED_BETAS = (0.99, 0.999)
_BCE = losses.weighted_sigmoid_bce


def _method(name: str, scheme: str, loss_fn: Callable[..., Any], doc: str, **kwargs: Any) -> Method:
    """A Method whose parameter and `vary` mappings are read-only."""
    for key in ("scheme_params", "loss_params", "vary", "model"):
        if key in kwargs:
            kwargs[key] = types.MappingProxyType(dict(kwargs[key]))
    return Method(name, scheme, loss_fn, doc, **kwargs)


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
            "Class-balanced (Cui et al., CVPR 2019) on both terms, beta = 0.999; vary it with "
            "--set vary.scheme_params.beta=[0.99,0.9999].",
            variant="class_balanced(beta={scheme_params.beta:g})",
            scheme_params={"beta": 0.999},
        ),
        _method(
            "proposed",
            "proposed",
            _BCE,
            "Proposed effective-number positive weighting pos_j = E(n-_j) / E(n+_j); varies "
            "beta over 0.99 and 0.999 (--set vary.scheme_params.beta=[0.9,0.9999] for the ends).",
            variant="proposed(beta={scheme_params.beta:g})",
            scheme_params={"beta": 0.999},
            vary={"scheme_params.beta": PROPOSED_BETAS},
        ),
        _method(
            "focal",
            "none",
            losses.sigmoid_focal,
            "Sigmoid focal loss (Lin et al., ICCV 2017), gamma = 2, no alpha.",
            variant="focal(gamma={loss_params.gamma:g})",
            loss_params={"gamma": 2.0},
        ),
        _method(
            "asymmetric",
            "none",
            losses.asymmetric,
            "Asymmetric loss (Ridnik et al., ICCV 2021), gamma_pos = 0, gamma_neg = 4, clip = "
            "0.05.",
            variant="asymmetric(gamma_neg={loss_params.gamma_neg:g},clip={loss_params.clip:g})",
            loss_params={"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05},
        ),
        _method(
            "distribution_balanced",
            "none",
            losses.distribution_balanced,
            "Distribution-balanced loss (Wu et al., ECCV 2020) with the paper's defaults.",
            variant="distribution_balanced",
            loss_params={"alpha": 0.1, "beta": 10.0, "mu": 0.3, "kappa": 0.05, "lam": 2.0},
        ),
        _method(
            "logit_adjusted",
            "none",
            losses.logit_adjusted_bce,
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


class _LossesOfMethods(Mapping[str, Callable[..., Any]]):
    """The loss functions of `METHODS` by their own name, read from `METHODS` at each lookup
    (so a method added to `METHODS`, even at run time, brings its loss)."""

    def __getitem__(self, name: str) -> Callable[..., Any]:
        for method in METHODS.values():
            if method.loss == name:
                return method.loss_fn
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(m.loss for m in METHODS.values()))

    def __len__(self) -> int:
        return len(dict.fromkeys(m.loss for m in METHODS.values()))

    def __repr__(self) -> str:
        return f"LOSSES({', '.join(self)})"


# Loss functions by their own name: a config's `loss` field names the function it calls.
LOSSES: Mapping[str, Callable[..., Any]] = _LossesOfMethods()


# ---------------------------------------------------------------------------------------------
# What the trainer supplies to a loss
# ---------------------------------------------------------------------------------------------


def keyword_parameters(fn: Callable, excluded: tuple[str, ...] = ()) -> dict[str, Any]:
    """{name: inspect.Parameter} of the parameters of `fn` that can be passed by keyword, less
    `excluded`: the one reading of a signature (losses, schemes, task loaders)."""
    return {
        name: p
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in excluded
    }


def _prior(counts: weights.LabelCounts) -> np.ndarray:
    """positives / N, clipped to half a count from 0 and 1 (a label with no positives or no
    negatives would give log(0))."""
    half = 0.5 / counts.num_examples
    return np.clip(np.asarray(counts.positives, np.float32) / counts.num_examples, half, 1 - half)


# Per-label inputs of a loss, from the TRAIN split's label counts and the scheme's weights: they
# enter the jitted train step as arguments (float32 [C]), so runs that differ in them share one
# compiled program.
_PER_LABEL_INPUTS: dict[str, Callable[[weights.LabelCounts, Any, Any], Any]] = {
    "pos_weight": lambda counts, pos, neg: pos,
    "neg_weight": lambda counts, pos, neg: neg,
    "positives": lambda counts, pos, neg: np.asarray(counts.positives, np.float32),
    "prior": lambda counts, pos, neg: _prior(counts),
}
# Scalar inputs, passed as Python values (compiled into the step).
_STATIC_INPUTS: dict[str, Callable[[weights.LabelCounts, Any, Any], Any]] = {
    "num_examples": lambda counts, pos, neg: int(counts.num_examples),
}
# Loss arguments the trainer supplies from the logits, labels, scheme weights and label counts;
# a config's loss_params may not set them.
SUPPLIED_LOSS_ARGS = ("logits", "labels", *_PER_LABEL_INPUTS, *_STATIC_INPUTS)


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """The arguments the trainer supplies to a loss: `per_label` float32 [C] arrays (arguments
    of the train step) and `static` Python values (compiled into it)."""

    per_label: dict[str, Any]
    static: dict[str, Any]


def loss_inputs(
    loss: str, counts: weights.LabelCounts, pos_weight: Any, neg_weight: Any
) -> LossInputs:
    """What loss `loss` (a `LOSSES` key) is given besides logits, labels and its loss_params:
    each input of `_PER_LABEL_INPUTS` / `_STATIC_INPUTS` that the function takes, computed from
    the label counts and the scheme's (pos, neg) weights. The trainer calls it with the TRAIN
    split's counts, config validation with a made-up count."""
    accepted = keyword_parameters(LOSSES[loss])
    supplied = {
        group: {
            name: supply(counts, pos_weight, neg_weight)
            for name, supply in suppliers.items()
            if name in accepted
        }
        for group, suppliers in (("per_label", _PER_LABEL_INPUTS), ("static", _STATIC_INPUTS))
    }
    return LossInputs(**supplied)
