"""Runtime checks of parsed JSON/TOML values against type annotations. Pure.

Wire messages (:mod:`agent.wire.protocol`) and pipeline settings
(:mod:`agent.stages.pipeline`) are dataclasses; both validate untrusted input against
the fields' annotations with :func:`accepts`, so a ``bool`` is never taken
for an ``int`` and an error can say what was expected (:func:`describe`).
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

__all__ = ["accepts", "describe"]

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}


def accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (from JSON or TOML) fits ``annotation``."""
    if annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(accepts(arg, value) for arg in get_args(annotation))
    if origin is Literal:
        return value in get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item, *_) = get_args(annotation) or (Any,)
        return isinstance(value, list) and all(accepts(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation)


def describe(annotation: Any) -> str:
    """Words for an annotation: ``a number``, ``a string or a list of strings``…"""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        # "Optional" is left unsaid: TOML cannot write a null, and leaving a
        # field out is how both formats say "none".
        options = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(describe(a) for a in options)
    if annotation is type(None):
        return "null"
    if origin in (list, tuple):
        (item, *_) = get_args(annotation) or (Any,)
        if item is Any:
            return "a list"
        return f"a list of {describe(item).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return _NAMES[dict]
    return _NAMES.get(annotation, str(annotation))
