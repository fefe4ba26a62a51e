"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from experiments.data import fashion_mnist as fm


@pytest.fixture(scope="session")
def fashion_mnist_installed() -> None:
    """Skips the test unless the real Fashion-MNIST files are on this machine (never downloads)."""
    try:
        if fm.find_fashion_mnist() is None:
            pytest.skip(
                "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist, or set "
                "LTWEIGHTS_DATA to a folder with the four files)"
            )
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def real_fashion_mnist(fashion_mnist_installed) -> fm.FashionMNIST:
    """The real Fashion-MNIST release, read once per test session."""
    return fm.load_fashion_mnist(download=False)
