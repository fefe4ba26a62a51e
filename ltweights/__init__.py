"""ltweights: label weighting schemes, multi-label losses and metrics for long-tailed labels.

Pure functions of arrays that depend on JAX and NumPy only:

- `ltweights.weights`: label counts -> per-label (pos, neg) weights, one function per scheme.
- `ltweights.losses`: elementwise multi-label losses (weighted BCE, focal, asymmetric, ...).
- `ltweights.metrics`: AP / mAP, F1, thresholds, frequency buckets.

Examples:
  >>> import numpy as np
  >>> import ltweights
  >>> counts = ltweights.weights.label_counts(np.array([[1, 0], [1, 1], [1, 0], [0, 0]]))
  >>> pos, neg = ltweights.weights.scheme_weights("inverse", counts)
  >>> logits, labels = np.zeros((1, 2), np.float32), np.array([[0.0, 1.0]], np.float32)
  >>> loss = ltweights.losses.weighted_sigmoid_bce(logits, labels, pos, neg)
  >>> np.asarray(loss, float).round(4)  # log 2 per term; label 1's positive term weighs 3
  array([[0.6931, 2.0794]])
"""

from ltweights import losses, metrics, weights

__all__ = ["losses", "metrics", "weights"]
__version__ = "0.1.0"
