"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from experiments.data import fashion_mnist as fm


@pytest.fixture(autouse=True)
def one_job_unless_asked(monkeypatch):
    """Runs train in the test's own process (stubs and monkeypatches apply) unless a test
    passes --jobs."""
    monkeypatch.setenv("LTWEIGHTS_JOBS", "1")


@pytest.fixture(scope="session")
def fashion_mnist_installed() -> None:
    """The real Fashion-MNIST files, which the repository carries (data/fashion-mnist/).

    Fails, never skips, when they cannot be found: tests on real images must always run.
    """
    try:
        found = fm.find_fashion_mnist()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    if found is None:
        pytest.fail(
            f"Fashion-MNIST not found: the repository's copy in {fm.REPOSITORY_DIR} is missing "
            "(restore it with `git checkout -- data/fashion-mnist`)"
        )


@pytest.fixture(scope="session")
def real_fashion_mnist(fashion_mnist_installed) -> fm.FashionMNIST:
    """The real Fashion-MNIST release, read once per test session."""
    return fm.load_fashion_mnist(download=False)
