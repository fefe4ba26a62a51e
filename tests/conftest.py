"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

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


# --------------------------------------------------------------------------------------------
# In CI every test runs: a skip for a missing Python package is a failure there.

REQUIRE_ALL_TESTS = "LTWEIGHTS_REQUIRE_ALL_TESTS"
_MISSING_PACKAGE = ("could not import", "No module named")


def _skipped_for_missing_package(report) -> str | None:
    """The skip reason when `report` is a skip caused by a package that is not installed."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[-1])
    return reason if any(s in reason for s in _MISSING_PACKAGE) else None


def _fail_missing_package_skip(report) -> None:
    reason = _skipped_for_missing_package(report)
    if reason and os.environ.get(REQUIRE_ALL_TESTS) == "1":
        report.outcome = "failed"
        report.longrepr = (
            f"skipped for a missing package ({reason}), but {REQUIRE_ALL_TESTS}=1 requires every "
            "test to run: install the test extras as README's test command does."
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_missing_package_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_missing_package_skip(report)
    return report
