"""Immutable records for longrun's small types (the protocol's, the settings, the ports),
made without ``dataclasses``.

A frozen dataclass builds its methods from source text with ``exec`` when its class is
created: about half a millisecond for a small one and two for the checkpoint, paid by every
cold start. A :class:`Record` subclass declares its fields the same way (annotations, with
defaults, and :func:`field` for a default made per instance); its class gets the field list
once, and shared methods do the rest. ``dataclass_transform`` tells type checkers that the
constructor takes the fields, as a dataclass's does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

__all__ = ["Record", "field"]

R = TypeVar("R", bound="Record")


class _Factory:
    """A field default made anew for each instance (``field(default_factory=dict)``)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is ``default_factory()``, made for each instance."""
    return _Factory(default_factory)


_NO_DEFAULT = object()


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Record:
    """A frozen record: fields from the class's annotations, in order; keyword or positional
    construction with defaults; equality, hash and repr by fields; no attribute may be set
    after construction (``replace`` makes a changed copy)."""

    FIELDS: ClassVar[tuple[str, ...]] = ()
    """The field names, in declaration order."""
    _FIELD_SET: ClassVar[frozenset[str]] = frozenset()
    _DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass of a record keeps its base's fields first, as a dataclass's does.
        inherited = cls.FIELDS
        defaults: dict[str, Any] = dict(cls._DEFAULTS)
        own = tuple(
            name
            for name, kind in inspect.get_annotations(cls).items()
            if not str(kind).startswith("ClassVar")
        )
        names = inherited + tuple(name for name in own if name not in inherited)
        for name in own:
            value = cls.__dict__.get(name, _NO_DEFAULT)
            if value is not _NO_DEFAULT:
                defaults[name] = value
                if isinstance(value, _Factory):
                    delattr(cls, name)  # (an instance always holds its own)
        seen_default = False
        for name in names:
            if name in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default after one with")
        cls.FIELDS = names
        cls._FIELD_SET = frozenset(names)
        cls._DEFAULTS = defaults

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.FIELDS
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes {len(names)} fields, {len(args)} were given"
            )
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in values or name not in names:
                problem = "twice" if name in values else "unknown"
                raise TypeError(f"{type(self).__name__}(): {problem} field {name!r}")
            values[name] = value
        if len(values) < len(names):
            defaults = self._DEFAULTS
            for name in names:
                if name not in values:
                    if name not in defaults:
                        raise TypeError(f"{type(self).__name__}(): field {name!r} is missing")
                    default = defaults[name]
                    values[name] = default.make() if isinstance(default, _Factory) else default
        self.__dict__.update((name, values[name]) for name in names)

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes``: a shallow copy of the fields, not a new ``__init__`` (a
        hop replaces its document and its hop entry at every write, once a step)."""
        known = self._FIELD_SET
        if not known.issuperset(changes):
            unknown = sorted(changes.keys() - known)
            raise TypeError(f"{type(self).__name__} has no field {unknown[0]!r}")
        copy = object.__new__(type(self))
        fields = copy.__dict__
        fields.update(self.__dict__)
        fields.update(changes)
        return copy

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: use .replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"{type(self).__name__}({shown})"
