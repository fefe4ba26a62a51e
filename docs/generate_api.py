"""Writes docs/api.md, the API reference of the `ltweights` core, from its docstrings.

Run from the repository root after changing a public docstring or signature:

    python docs/generate_api.py           # rewrite docs/api.md
    python docs/generate_api.py --check   # exit 1 if docs/api.md is out of date

The page lists, for each module of the package's public surface (`ltweights.__all__`), the
module's docstring, then every name in the module's `__all__` in source order: its signature
and its docstring verbatim (examples included). tests/test_api.py checks that the page is current.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api.md"

HEADER = """\
# API reference: `ltweights`

Generated from the docstrings by `python docs/generate_api.py`; do not edit by hand.
Every function's `Examples:` run as doctests under `python3 -m pytest` (tests/test_api.py).
"""


class _Annotation:
    """An annotation written as in the source (`ArrayLike | None`, not `'ArrayLike | None'`)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature(obj) -> str:
    """`name(params) -> return`, with annotations as the source spells them."""
    sig = inspect.signature(obj)

    def plain(annotation):
        if annotation is inspect.Parameter.empty:
            return annotation
        if isinstance(annotation, typing.ForwardRef):  # a NamedTuple's string annotation
            annotation = annotation.__forward_arg__
        return _Annotation(annotation if isinstance(annotation, str) else repr(annotation))

    params = [p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()]
    sig = sig.replace(parameters=params, return_annotation=plain(sig.return_annotation))
    return f"{obj.__name__}{sig}"


def _docstring(obj) -> str:
    """The summary line as a paragraph, the rest verbatim in a text block."""
    doc = inspect.getdoc(obj) or ""
    summary, _, rest = doc.partition("\n")
    out = [summary.strip(), ""]
    if rest.strip():
        out += ["```text", rest.strip("\n"), "```", ""]
    return "\n".join(out)


def _source_position(module, obj) -> tuple[bool, int]:
    """Where `obj` is defined: its own module's names first, in line order."""
    try:
        same_module = inspect.getmodule(obj) is module
        return (not same_module, inspect.getsourcelines(obj)[1])
    except (TypeError, OSError):
        return (True, sys.maxsize)  # data (a registry dict): after the functions


def _entry(qualified: str, obj) -> str:
    if callable(obj):
        parts = [f"### `{qualified}`", "", "```python", signature(obj), "```", "", _docstring(obj)]
        if inspect.isclass(obj):
            for name, member in vars(obj).items():
                if name.startswith("_"):
                    continue
                if isinstance(member, property):
                    parts += [f"#### `{qualified}.{name}` (property)", "", _docstring(member.fget)]
                elif inspect.isfunction(member):
                    parts += [f"#### `{qualified}.{name}`", "", "```python"]
                    parts += [signature(member), "```", "", _docstring(member)]
        return "\n".join(parts)
    if isinstance(obj, dict):
        keys = ", ".join(f"`{key}`" for key in obj)
        return f"### `{qualified}`\n\nA `dict` with the keys {keys}.\n"
    return f"### `{qualified}`\n\n`{obj!r}`\n"


def render() -> str:
    """The API page's markdown."""
    import ltweights

    sections = [HEADER]
    for module_name in ltweights.__all__:
        module = getattr(ltweights, module_name)
        sections += [f"## `ltweights.{module_name}`", "", _docstring(module)]
        names = sorted(
            module.__all__, key=lambda n: (_source_position(module, getattr(module, n)), n)
        )
        sections += [_entry(f"ltweights.{module_name}.{n}", getattr(module, n)) for n in names]
    return "\n".join(sections).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = API_PAGE.read_text(encoding="utf-8") if API_PAGE.exists() else ""
        if current != text:
            print(f"{API_PAGE.relative_to(ROOT)} is out of date: run python docs/generate_api.py")
            return 1
        return 0
    API_PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {API_PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # the checkout's ltweights, not an installed copy
    sys.exit(main())
