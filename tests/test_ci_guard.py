"""The CI guard of tests/conftest.py: with LTWEIGHTS_REQUIRE_ALL_TESTS=1, a test or module that
skips because a Python package is missing fails; other skips (a GPU) stay skips."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

PROBES = {
    "test_module_skip.py": (
        "import pytest\nmissing = pytest.importorskip('no_such_package_for_ltweights')\n"
        "def test_x():\n    pass\n"
    ),
    "test_in_test_skip.py": (
        "import pytest\n"
        "def test_needs_package():\n    pytest.importorskip('no_such_package_for_ltweights')\n"
        "def test_needs_gpu():\n    pytest.skip('needs a GPU')\n"
    ),
}


@pytest.fixture
def probes(pytester):
    pytester.makeconftest(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    pytester.makepyfile(**{name[:-3]: text for name, text in PROBES.items()})
    return pytester


def test_missing_package_skips_fail_when_all_tests_are_required(probes, monkeypatch):
    monkeypatch.setenv("LTWEIGHTS_REQUIRE_ALL_TESTS", "1")
    result = probes.runpytest("-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(failed=1, skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*no_such_package_for_ltweights*LTWEIGHTS_REQUIRE_ALL_TESTS=1*"])


def test_missing_package_skips_stay_skips_elsewhere(probes, monkeypatch):
    monkeypatch.delenv("LTWEIGHTS_REQUIRE_ALL_TESTS", raising=False)
    result = probes.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3)
