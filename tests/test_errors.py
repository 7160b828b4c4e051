"""The exception tree drawn in errors.py's docstring is the tree of its classes: a class added,
moved or removed without the drawing (or the other way round) fails here."""

from __future__ import annotations

import inspect
import re

from updaterd import errors


def drawn() -> dict[str, str]:
    """Each class of the drawing and the class it hangs from."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^( *)((?:[│ ] {3}|    )*)(?:[├└]── )?([A-Z][A-Za-z]+)\b", line)
        if m is None or not line.startswith("    "):
            continue
        depth = len(line) - len(line.lstrip(" │├└─"))
        name = m.group(3)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def defined() -> dict[str, str]:
    return {name: cls.__bases__[0].__name__
            for name, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.UpdaterError) and cls is not errors.UpdaterError
            and cls.__module__ == errors.__name__}


def test_the_drawing_is_the_tree_of_the_classes() -> None:
    assert drawn() == defined()
