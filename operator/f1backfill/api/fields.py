"""Reading and writing CR objects: camelCase names, typed values, defaults.

The models are dataclasses with snake_case fields; the CR uses camelCase. `to_camel` is the
one mapping between them, used when reading (`read`) and writing (`to_camel_dict`),
and by the drift test that compares the models with the CRD.

The CRD's openAPIV3Schema is what validates a YachtBackfill: the API server refuses a
bound, a length or a pattern it breaks before the operator ever sees the object. So `read`
does not check them again. It reads each field as the type the model declares and leaves
defaults to the dataclasses; a value of the wrong type (an object stored before a schema
change, say) is a `SpecError` naming the field, never a crash of the tick.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar, Final, Self, TypeVar

from ..errors import SpecError
from ..memory import shared_time

# Kubernetes' resource.Quantity, without a sign: what `parse_quantity` reads (the CRD's
# pattern for spec.resources is the same string).
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Quantity = str | int

E = TypeVar("E", bound=StrEnum)
M = TypeVar("M", bound="CrObject")


def to_camel(name: str) -> str:
    """`batch_sleep_seconds` -> `batchSleepSeconds`: the CR's name of a model field."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _wrong_type(path: str, value: Any, expected: str) -> SpecError:
    return SpecError(path, f"must be of type {expected}, not {json_type(value)}")


def parse_time(value: str, path: str = "time") -> datetime:
    """An RFC 3339 timestamp (`2025-01-31T12:00:00Z`) as an aware datetime, one shared
    object per distinct value (see memory.shared_time)."""
    try:
        parsed = shared_time(value)
    except (TypeError, ValueError):
        raise SpecError(path, f"{json.dumps(value, default=str)} is not a date-time") \
            from None
    if parsed.tzinfo is None:
        raise SpecError(path, f"{json.dumps(value)} has no time zone")
    return parsed


@functools.lru_cache(maxsize=4096)
def format_time(value: datetime) -> str:
    """A datetime the way Kubernetes writes metav1.Time: UTC, seconds, `Z`. Cached: the
    conditions of a tick share a few times, written thousands of times."""
    if value.tzinfo is None:  # naive datetimes in this code base are UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_QUANTITY_SUFFIXES: Final[Mapping[str, Decimal]] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY_SPLIT = re.compile(r"^([0-9.]+)((?:[eE][+-]?[0-9.]+)|[KMGTPE]i|[numkMGTPE]|)$")


def parse_quantity(value: Quantity) -> Decimal:
    """A Kubernetes quantity (`512Mi`, `500m`, `1.5`, `2e3`, 4) as a number of base units."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY_SPLIT.match(value) if re.match(QUANTITY_PATTERN, value) else None
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.groups()
    try:
        if len(suffix) > 1 and suffix[0] in "eE" and suffix[1] != "i":  # 1e3, not E or Ei
            return Decimal(number) * Decimal(10) ** Decimal(suffix[1:])
        return Decimal(number) * _QUANTITY_SUFFIXES[suffix]
    except InvalidOperation as exc:  # pragma: no cover - the pattern rules this out
        raise ValueError(f"not a quantity: {value!r}") from exc


class CrObject:
    """Base of the models of a CR's objects: each is read from the CR's JSON by its own type
    hints, so a field's declaration is the one place that says how it is read.

    A field without a default is required; a key absent or null leaves the dataclass
    default. Keys the model does not know are ignored, as the API server prunes them.
    """

    __slots__ = ()
    # Where such an object sits in a YachtBackfill, for the errors of `from_dict(data)`.
    PATH: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> Self:
        return read(cls, data, cls.PATH if path is None else path)

    @classmethod
    def _normalise(cls, values: dict[str, Any], path: str) -> None:
        """Adjust what was read before the model is built (a hook; nothing by default)."""


Reader = Callable[[Any, str], Any]  # (value, path) -> the field's value


def read(cls: type[M], data: Any, path: str) -> M:
    """`cls` from the JSON object `data` at `path`, each field read as its hint says."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _wrong_type(path, data, "object")
    values: dict[str, Any] = {}
    for name, key, reader, required in _plan(cls):
        value = data.get(key)
        if value is None:
            # The API server drops nulls of non-nullable fields before defaulting.
            if required:
                raise SpecError(f"{path}.{key}", "Required value")
            continue
        values[name] = reader(value, f"{path}.{key}")
    cls._normalise(values, path)
    return cls(**values)


@functools.cache
def _plan(cls: type) -> tuple[tuple[str, str, Reader, bool], ...]:
    """(field, camelCase key, reader, required) of a model class, worked out once."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.name, to_camel(f.name), _reader(hints[f.name]),
         f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls))


def _reader(hint: Any) -> Reader:
    """How a value of the type `hint` is read."""
    args = tuple(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if set(args) == {str, int}:
            return _quantity
        (hint,) = args  # X | None
        return _reader(hint)
    if typing.get_origin(hint) is tuple:
        return _list_of(_reader(args[0]))
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return functools.partial(_enum, hint)
    if dataclasses.is_dataclass(hint):
        return hint.from_dict
    return _SCALAR_READERS[hint]


def _typed(kinds: type | tuple[type, ...], expected: str) -> Reader:
    def check(value: Any, path: str) -> Any:
        # A bool is an int to Python, never a number to JSON.
        if isinstance(value, bool) != (expected == "boolean") or not isinstance(value, kinds):
            raise _wrong_type(path, value, expected)
        return value
    return check


_BOOLEAN, _INT, _NUMBER, _STRING, _INT_OR_STRING, _ARRAY = (
    _typed(bool, "boolean"), _typed(int, "integer"), _typed((int, float), "number"),
    _typed(str, "string"), _typed((int, str), "integer or string"),
    _typed((list, tuple), "array"))


def _integer(value: Any, path: str) -> int:
    # JSON has one number type: 100.0 is an integer to the API server too.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _INT(value, path)


def _number(value: Any, path: str) -> float:
    return float(_NUMBER(value, path))


def _timestamp(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        return value
    return parse_time(_STRING(value, path), path)


_SCALAR_READERS: Final[Mapping[Any, Reader]] = {
    bool: _BOOLEAN,
    int: _integer,
    float: _number,
    str: _STRING,
    datetime: _timestamp,
}


def _enum(enum: type[E], value: Any, path: str) -> E:
    try:
        return enum(_STRING(value, path))
    except ValueError:
        supported = ", ".join(json.dumps(member.value) for member in enum)
        raise SpecError(
            path, f"Unsupported value: {json.dumps(value)}: supported values: {supported}"
        ) from None


def _quantity(value: Any, path: str) -> Quantity:
    """An int-or-string Kubernetes quantity, kept as written."""
    _INT_OR_STRING(value, path)
    try:
        negative = parse_quantity(value) < 0
    except ValueError:
        raise SpecError(path, f"{json.dumps(value)} is not a quantity") from None
    if negative:  # the CRD cannot say this of the integer form; the Job would be refused
        raise SpecError(path, f"{value} must be greater than or equal to 0")
    return value


def _list_of(item: Reader) -> Reader:
    def read_list(value: Any, path: str) -> tuple:
        _ARRAY(value, path)
        return tuple(item(element, f"{path}[{index}]") for index, element in enumerate(value))
    return read_list


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _plain(value: Any, prune_none: bool) -> Any:
    kind = type(value)
    if kind in _SCALARS:  # exact types: a StrEnum is a str too, encoded below
        return value
    return _encoder(kind)(value, prune_none)


@functools.cache
def _encoder(kind: type) -> Callable[[Any, bool], Any]:
    """How values of one type become JSON, chosen once per type: the operator turns
    thousands of statuses into JSON per tick, and asking `is_dataclass` of an enum member
    each time cost more than the encoding."""
    if dataclasses.is_dataclass(kind):
        return lambda value, prune_none: to_camel_dict(value, prune_none=prune_none)
    if issubclass(kind, StrEnum):
        return lambda value, _: value.value
    if issubclass(kind, datetime):
        return lambda value, _: format_time(value)
    if issubclass(kind, list | tuple):
        return lambda value, prune_none: [_plain(item, prune_none) for item in value]
    return lambda value, _: value


def to_camel_dict(model: Any, *, prune_none: bool = True) -> dict[str, Any]:
    """A model as the CR's JSON: camelCase keys, enums as strings, RFC 3339 times.

    With `prune_none` (the default) unset fields are left out; without it they are written
    as null, which in a merge patch removes the field from the object.
    """
    result: dict[str, Any] = {}
    for name, camel in _camel_fields(type(model)):
        value = getattr(model, name)
        if value is None and prune_none:
            continue
        result[camel] = _plain(value, prune_none)
    return result


def changed_camel_fields(old: Any, new: Any) -> dict[str, Any]:
    """The top-level fields of `new` whose JSON differs from `old`'s (two models of one
    class), encoded, unset ones as null. Only the fields that compare unequal are encoded;
    their JSON decides, so two times within one second, which read the same, are no
    change."""
    changes: dict[str, Any] = {}
    for name, camel in _camel_fields(type(new)):
        value, before = getattr(new, name), getattr(old, name)
        if value != before:
            encoded = _plain(value, False)
            if encoded != _plain(before, False):
                changes[camel] = encoded
    return changes


@functools.cache
def _camel_fields(cls: type) -> tuple[tuple[str, str], ...]:
    """(field, camelCase name) of a model class, computed once."""
    return tuple((f.name, to_camel(f.name)) for f in dataclasses.fields(cls))
