"""Schemes and losses: how a config weights labels and which loss it trains with.

The first five are label weighting schemes of `ltweights.weights` used with weighted sigmoid
BCE; the last four are losses of `ltweights.losses`, used with no label weighting (scheme
"none") so that each is compared as published. Every entry sets `variant`, the template of the
report row's name, which carries the hyperparameters that distinguish it, e.g.
"proposed(beta=0.999)" or "focal(gamma=2)".

Each function takes the config after task and tier, and sets scheme, scheme_params, loss,
loss_params, sweep and variant.
"""

from __future__ import annotations

import ml_collections

PROPOSED_BETAS = (0.9, 0.99, 0.999, 0.9999)


def _weighted_bce(config: ml_collections.ConfigDict, scheme: str) -> None:
    config.scheme = scheme
    config.loss = "bce"
    config.variant = "{scheme}"


def none(config: ml_collections.ConfigDict) -> None:
    """No weighting: pos = neg = 1; plain sigmoid BCE. The paper's first baseline."""
    _weighted_bce(config, "none")


def inverse(config: ml_collections.ConfigDict) -> None:
    """Inverse frequency: pos_j = n-_j / n+_j, neg_j = 1. The paper's second baseline."""
    _weighted_bce(config, "inverse")


def inverse_sqrt(config: ml_collections.ConfigDict) -> None:
    """Square-root inverse frequency: pos_j = sqrt(n-_j / n+_j), neg_j = 1."""
    _weighted_bce(config, "inverse_sqrt")


def class_balanced(config: ml_collections.ConfigDict) -> None:
    """Class-balanced (Cui et al., CVPR 2019): c_j = (1 - beta) / (1 - beta^n+_j), normalised to
    sum to C, on both terms; beta = 0.999 (single value; sweep it with
    `--set sweep.scheme_params.beta=[0.99,0.9999]`)."""
    _weighted_bce(config, "class_balanced")
    config.scheme_params.beta = 0.999
    config.variant = "class_balanced(beta={scheme_params.beta:g})"


def proposed(config: ml_collections.ConfigDict) -> None:
    """Proposed effective-number positive weighting: pos_j = E(n-_j) / E(n+_j) with
    E(n) = (1 - beta^n) / (1 - beta), neg_j = 1; tends to `none` as beta -> 0 and to `inverse`
    as beta -> 1. Sweeps beta over 0.9, 0.99, 0.999, 0.9999 (4 variants per cut-off and seed)."""
    _weighted_bce(config, "proposed")
    config.scheme_params.beta = 0.999
    config.sweep.scheme_params = ml_collections.ConfigDict()
    config.sweep.scheme_params.beta = list(PROPOSED_BETAS)
    config.variant = "proposed(beta={scheme_params.beta:g})"


def focal(config: ml_collections.ConfigDict) -> None:
    """Sigmoid focal loss (Lin et al., ICCV 2017), gamma = 2, no alpha, scheme "none"."""
    config.scheme = "none"
    config.loss = "focal"
    config.loss_params.gamma = 2.0
    config.variant = "focal(gamma={loss_params.gamma:g})"


def asymmetric(config: ml_collections.ConfigDict) -> None:
    """Asymmetric loss (Ridnik et al., ICCV 2021) with the paper's defaults gamma_pos = 0,
    gamma_neg = 4, probability margin clip = 0.05, scheme "none"."""
    config.scheme = "none"
    config.loss = "asymmetric"
    config.loss_params.gamma_pos = 0.0
    config.loss_params.gamma_neg = 4.0
    config.loss_params.clip = 0.05
    config.variant = "asymmetric(gamma_neg={loss_params.gamma_neg:g},clip={loss_params.clip:g})"


def distribution_balanced(config: ml_collections.ConfigDict) -> None:
    """Distribution-balanced loss (Wu et al., ECCV 2020): re-balanced weighting smoothed as
    alpha + sigmoid(beta * (r - mu)) with alpha = 0.1, beta = 10, mu = 0.3, plus
    negative-tolerant regularisation with prior-bias scale kappa = 0.05 and negative-logit scale
    lam = 2 (the paper's defaults, as in `ltweights.losses.distribution_balanced`), scheme
    "none". Label counts come from the training split."""
    config.scheme = "none"
    config.loss = "distribution_balanced"
    config.loss_params.alpha = 0.1
    config.loss_params.beta = 10.0
    config.loss_params.mu = 0.3
    config.loss_params.kappa = 0.05
    config.loss_params.lam = 2.0
    config.variant = "distribution_balanced"


def logit_adjusted(config: ml_collections.ConfigDict) -> None:
    """Logit-adjusted BCE (Menon et al., ICLR 2021) per label: each logit shifted by tau times
    the log of the label's training prior (exact form: `ltweights.losses.logit_adjusted_bce`);
    tau = 1, scheme "none"."""
    config.scheme = "none"
    config.loss = "logit_adjusted"
    config.loss_params.tau = 1.0
    config.variant = "logit_adjusted(tau={loss_params.tau:g})"


SCHEMES = {
    "none": none,
    "inverse": inverse,
    "inverse_sqrt": inverse_sqrt,
    "class_balanced": class_balanced,
    "proposed": proposed,
    "focal": focal,
    "asymmetric": asymmetric,
    "distribution_balanced": distribution_balanced,
    "logit_adjusted": logit_adjusted,
}
