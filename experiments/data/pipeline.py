"""Input pipeline: shuffled training batches and padded evaluation batches, as NumPy arrays.

Batches are C-contiguous with the batch on axis 0, so the trainer can place them on a device mesh
with the batch sharded over a data axis (`jax.device_put(batch, NamedSharding(mesh, P("data")))`).
The whole split is in memory; a batch is one fancy-indexing gather: hundreds of thousands of
28-56 px catalog images per second on one core, but tens of thousands of 128 x 128 x 3 crops, about
what a ResNet-18 step at that size consumes on a current GPU (`python -m benchmarks.data`).
`prefetch` gathers the next batches in a background thread, so the gather overlaps the trainer's
dispatch and transfer on another core; the batches and their order are unchanged.

Determinism: the order of epoch e under seed s is a permutation drawn from
`np.random.default_rng([s, e, 0x5EED])`, independent of batch size, of `start_batch`, and of
anything else the process did, so a run resumed at (epoch, batch) sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import numpy as np

T = TypeVar("T")
_PIPELINE_STREAM = 0x5EED  # keeps these permutations apart from other users of (seed, epoch)


class ArrayDataset(Protocol):
    images: np.ndarray
    labels: np.ndarray


def num_batches(num_examples: int, batch_size: int) -> int:
    """Full batches per training epoch, floor(num_examples / batch_size) (remainder dropped)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0; got {num_examples}.")
    return num_examples // batch_size


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order, int64 [num_examples], in which epoch `epoch` visits the examples."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0; got seed={seed}, epoch={epoch}.")
    return np.random.default_rng([seed, epoch, _PIPELINE_STREAM]).permutation(num_examples)


def epoch_batches(
    dataset: ArrayDataset, batch_size: int, *, seed: int, epoch: int, start_batch: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (images uint8 [B, H, W, ch], labels uint8 [B, C]) for one shuffled epoch.

    Batch b holds examples perm[b*B : (b+1)*B] of `epoch_permutation`; the last
    num_examples mod B examples of the permutation are dropped (they come first in another
    epoch's order). `start_batch` resumes mid-epoch: the batches are those of a full iteration
    from `start_batch` on.
    """
    images, labels = dataset.images, dataset.labels
    n = len(images)
    total = num_batches(n, batch_size)
    if total == 0:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n} training examples, so an epoch has no "
            "full batch; lower the batch size."
        )
    if not 0 <= start_batch <= total:
        raise ValueError(
            f"start_batch must be in 0..{total} (batches per epoch); got {start_batch}."
        )
    order = epoch_permutation(n, seed=seed, epoch=epoch)
    for b in range(start_batch, total):
        # Sorted indices gather in memory order; order within a batch does not matter to a
        # mean-reduced loss or to BatchNorm statistics.
        index = np.sort(order[b * batch_size : (b + 1) * batch_size])
        yield images[index], labels[index]


def eval_batches(
    dataset: ArrayDataset, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yields (images [B, ...], labels [B, C], num_valid) covering every example once, in order.

    Every batch has exactly `batch_size` rows, so one compiled eval step serves all; the rows
    past num_valid of the last batch are zeros and must be dropped from the metrics.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    images, labels = dataset.images, dataset.labels
    n = len(images)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        valid = stop - start
        if valid == batch_size:
            yield images[start:stop].copy(), labels[start:stop].copy(), valid
        else:
            batch_images = np.zeros((batch_size, *images.shape[1:]), images.dtype)
            batch_labels = np.zeros((batch_size, *labels.shape[1:]), labels.dtype)
            batch_images[:valid] = images[start:stop]
            batch_labels[:valid] = labels[start:stop]
            yield batch_images, batch_labels, valid


_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yields `items` in order, produced up to `depth` ahead by a background thread.

    An exception raised while producing is raised here, at the item where it happened. Closing
    the generator early (a `break`, an interrupted run) stops the thread within one item.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}.")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            put((_DONE, e))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
