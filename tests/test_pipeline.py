"""Input pipeline: determinism, coverage, mid-epoch resume and evaluation padding."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.data import Dataset
from experiments.data.pipeline import epoch_batches, eval_batches, num_batches, prefetch


def dataset(n: int, num_labels: int = 3) -> Dataset:
    """Example i has every pixel of its 4 x 4 x 1 image equal to i mod 256 and its id in the
    labels' bits, so a batch says which examples it holds."""
    ids = np.arange(n)
    images = np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None, None], (n, 4, 4, 1))
    labels = ((ids[:, None] >> np.arange(num_labels)) & 1).astype(np.uint8)
    return Dataset(np.ascontiguousarray(images), labels, tuple("abcdefgh"[:num_labels]), "train")


def ids_of(images: np.ndarray) -> list[int]:
    return images[:, 0, 0, 0].astype(int).tolist()


def test_num_batches_drops_the_remainder():
    assert [num_batches(n, 4) for n in (0, 3, 4, 7, 8, 9)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="batch_size"):
        num_batches(10, 0)


def test_epoch_is_deterministic_per_seed_and_epoch():
    data = dataset(50)

    def epoch(seed, e):
        return [ids_of(x) for x, _ in epoch_batches(data, 8, seed=seed, epoch=e)]

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), batch_size=st.integers(1, 64), seed=st.integers(0, 99))
def test_each_example_at_most_once_and_all_but_the_remainder(n, batch_size, seed):
    data = dataset(n)
    if batch_size > n:
        with pytest.raises(ValueError, match="lower the batch size"):
            next(epoch_batches(data, batch_size, seed=seed, epoch=0))
        return
    seen = []
    for images, labels in epoch_batches(data, batch_size, seed=seed, epoch=0):
        assert images.shape == (batch_size, 4, 4, 1) and labels.shape == (batch_size, 3)
        assert images.flags.c_contiguous and labels.flags.c_contiguous
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        seen.extend(ids_of(images))
        np.testing.assert_array_equal(labels, data.labels[images[:, 0, 0, 0]])  # rows agree
    assert len(seen) == num_batches(n, batch_size) * batch_size
    assert len(set(seen)) == len(seen)


def test_every_example_exactly_once_when_the_batch_divides():
    data = dataset(96)
    for e in range(3):
        seen = sorted(i for x, _ in epoch_batches(data, 12, seed=5, epoch=e) for i in ids_of(x))
        assert seen == list(range(96))


def test_dropped_examples_vary_between_epochs():
    data = dataset(10)
    dropped = set()
    for e in range(20):
        seen = {i for x, _ in epoch_batches(data, 4, seed=0, epoch=e) for i in ids_of(x)}
        dropped |= set(range(10)) - seen
    assert dropped == set(range(10))


def test_batches_are_shuffled():
    data = dataset(200)
    first = [ids_of(x) for x, _ in epoch_batches(data, 50, seed=0, epoch=0)]
    assert first[0] != list(range(50))


@pytest.mark.parametrize("start", [0, 1, 5, 12])
def test_resume_mid_epoch_gives_the_same_batches(start):
    data = dataset(100)
    full = list(epoch_batches(data, 8, seed=3, epoch=2))
    resumed = list(epoch_batches(data, 8, seed=3, epoch=2, start_batch=start))
    assert len(resumed) == len(full) - start
    for (a, la), (b, lb) in zip(full[start:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_resume_out_of_range():
    with pytest.raises(ValueError, match="start_batch"):
        next(epoch_batches(dataset(20), 4, seed=0, epoch=0, start_batch=6))


def test_accepts_any_object_with_images_and_labels():
    data = dataset(12)
    plain = types.SimpleNamespace(images=data.images, labels=data.labels)
    a = [ids_of(x) for x, _ in epoch_batches(plain, 4, seed=1, epoch=0)]
    b = [ids_of(x) for x, _ in epoch_batches(data, 4, seed=1, epoch=0)]
    assert a == b


@pytest.mark.parametrize(("n", "batch_size"), [(10, 4), (12, 4), (3, 8), (1, 1)])
def test_eval_batches_cover_in_order_and_pad_the_last(n, batch_size):
    data = dataset(n)
    batches = list(eval_batches(data, batch_size))
    assert len(batches) == -(-n // batch_size)
    seen = []
    for i, (images, labels, valid) in enumerate(batches):
        assert images.shape == (batch_size, 4, 4, 1) and labels.shape == (batch_size, 3)
        expected_valid = min(batch_size, n - i * batch_size)
        assert valid == expected_valid
        seen.extend(ids_of(images[:valid]))
        np.testing.assert_array_equal(labels[:valid], data.labels[i * batch_size :][:valid])
        assert not images[valid:].any() and not labels[valid:].any()
    assert seen == list(range(n))


def test_eval_batches_of_an_empty_split():
    empty = Dataset(np.zeros((0, 4, 4, 1), np.uint8), np.zeros((0, 2), np.uint8), ("a", "b"), "val")
    assert list(eval_batches(empty, 4)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(eval_batches(empty, 0))


def test_eval_batches_do_not_alias_the_dataset():
    data = dataset(8)
    images, _, _ = next(eval_batches(data, 4))
    images[:] = 0
    assert data.images[1, 0, 0, 0] == 1


def test_prefetch_yields_the_same_batches_in_the_same_order():
    data = dataset(50)
    direct = list(epoch_batches(data, 8, seed=3, epoch=1))
    fetched = list(prefetch(epoch_batches(data, 8, seed=3, epoch=1), depth=2))
    assert len(fetched) == len(direct)
    for (a_images, a_labels), (b_images, b_labels) in zip(direct, fetched, strict=True):
        assert a_images.tobytes() == b_images.tobytes()
        assert a_labels.tobytes() == b_labels.tobytes()


def test_prefetch_raises_the_producers_error_where_it_happened():
    def items():
        yield 1
        yield 2
        raise RuntimeError("disk gone")

    seen = []
    with pytest.raises(RuntimeError, match="disk gone"):
        for item in prefetch(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetch_stops_its_thread_when_the_consumer_stops_early():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    before = threading.active_count()
    fetched = prefetch(items(), depth=2)
    assert next(fetched) == 0
    fetched.close()
    assert threading.active_count() == before
    assert len(produced) <= 5  # stopped within a few items, not run to the end
    with pytest.raises(ValueError, match="depth"):
        next(prefetch([1], depth=0))
