"""Flat keyword parameters to and from configs: a flow keeps flat keyword parameters (what
deployments and callers pass) whose defaults are its config's, and builds the config from them;
the CLI forwards its options to a flow by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def pick(cls: type[T], values: Mapping[str, Any], **overrides: Any) -> T:
    """``cls`` (a dataclass) built from the entries of ``values`` that are its fields, then
    ``overrides``."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})


def call_with(fn: Callable[..., T], values: Mapping[str, Any], **overrides: Any) -> T:
    """``fn`` called with the entries of ``values`` that it takes as parameters (a Prefect flow's
    are its function's), then ``overrides`` (passed whether or not it names them)."""
    accepted = inspect.signature(getattr(fn, "fn", fn)).parameters
    return fn(**{**{k: v for k, v in values.items() if k in accepted}, **overrides})
