"""ltweights: label weighting schemes, multi-label losses and metrics for long-tailed labels.

Pure functions of arrays that depend on JAX and NumPy only:

- `ltweights.weights`: label counts -> per-label (pos, neg) weights, one function per scheme.
- `ltweights.losses`: elementwise multi-label losses (weighted BCE, focal, asymmetric, ...).
- `ltweights.metrics`: AP / mAP, F1, thresholds, frequency buckets.
"""

__version__ = "0.1.0"
