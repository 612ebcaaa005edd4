"""The public error names: one tree, drawn in ``coordinator.errors`` and exported whole."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import textwrap

import coordinator
from coordinator import errors


def _classes() -> dict[str, type]:
    return {name: value for name, value in vars(errors).items()
            if inspect.isclass(value) and value.__module__ == errors.__name__}


def _drawn() -> dict[str, str | None]:
    """The docstring's tree as ``name -> parent`` (``None`` for the root)."""
    assert errors.__doc__ is not None
    block = textwrap.dedent(errors.__doc__.split("::", 1)[1].split("\n\n")[1])
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in block.splitlines():
        match = re.match(r"^([│├└─ ]*)(\w+)", line)
        assert match, line
        depth = len(match.group(1)) // 4
        del stack[depth:]
        parents[match.group(2)] = stack[-1] if stack else None
        stack.append(match.group(2))
    return parents


def test_all_is_exactly_the_classes_of_the_module() -> None:
    assert sorted(errors.__all__) == sorted(_classes())


def test_every_error_descends_from_dispatch_error() -> None:
    for name, cls in _classes().items():
        assert issubclass(cls, errors.DispatchError), name


def test_the_drawn_tree_names_all_and_matches_the_classes() -> None:
    drawn = _drawn()
    assert sorted(drawn) == sorted(errors.__all__)
    for name, parent in drawn.items():
        cls = getattr(errors, name)
        expected = Exception if parent is None else getattr(errors, parent)
        assert cls.__bases__ == (expected,), f"{name} is drawn under {parent}"


#: a gRPC-side status the etcd boundary raises and translates itself; it never leaves it
_BOUNDARY_INTERNAL = {"coordinator.etcd.channel._StreamEnded"}


def test_no_exception_class_is_defined_elsewhere_in_the_package() -> None:
    strays = []
    for info in pkgutil.walk_packages(coordinator.__path__, "coordinator."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == info.name and info.name != errors.__name__):
                strays.append(f"{info.name}.{name}")
    assert sorted(set(strays) - _BOUNDARY_INTERNAL) == []
