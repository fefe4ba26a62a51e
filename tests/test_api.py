"""The core as a library: `import ltweights` gives its three modules and nothing else, every
public function carries an `Examples:` doctest that runs here, and docs/api.md is the page
`python docs/generate_api.py` writes from the docstrings."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ltweights

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ["ltweights", *(f"ltweights.{m.name}" for m in pkgutil.iter_modules(ltweights.__path__))]
)


def _public_callables():
    """(qualified name, object) of every function and class in a public module's `__all__`."""
    for module_name in ltweights.__all__:
        module = getattr(ltweights, module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                yield f"ltweights.{module_name}.{name}", obj


def test_import_ltweights_gives_its_modules_and_loads_only_jax_and_numpy():
    code = (
        "import sys, jax, numpy\n"
        "before = set(sys.modules)\n"
        "import ltweights\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names)))\n"
        "print(ltweights.losses.weighted_sigmoid_bce.__name__, ltweights.weights.SCHEMES['none']"
        ".__name__, ltweights.metrics.evaluate.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["['ltweights']", "weighted_sigmoid_bce none evaluate"]
    assert sorted(ltweights.__all__) == ["losses", "metrics", "weights"]


def test_the_package_is_marked_typed():
    assert (ROOT / "ltweights" / "py.typed").is_file()


@pytest.mark.parametrize("name, obj", list(_public_callables()), ids=lambda x: str(x))
def test_every_public_function_has_an_examples_doctest(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert "Examples:" in doc and ">>> " in doc.partition("Examples:")[2], name


def _doctests():
    finder = doctest.DocTestFinder()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        yield from (t for t in finder.find(module) if t.examples)


@pytest.mark.parametrize("test", list(_doctests()), ids=lambda t: t.name)
def test_docstring_examples_run(test):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    output: list[str] = []
    runner.run(test, out=output.append)
    assert runner.failures == 0, "".join(output)


def test_every_public_example_is_collected():
    collected = {t.name for t in _doctests()}
    for name, obj in _public_callables():
        assert f"{obj.__module__}.{obj.__qualname__}" in collected, name


def _generator():
    spec = importlib.util.spec_from_file_location("generate_api", ROOT / "docs" / "generate_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_page_is_generated_from_the_current_docstrings():
    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert page == _generator().render(), "docs/api.md is stale: run python docs/generate_api.py"
    for name, _ in _public_callables():
        assert f"### `{name}`" in page, name
