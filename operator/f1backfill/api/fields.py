"""Reading and writing CR objects: camelCase names, API-server-style checks and messages.

The models are dataclasses with snake_case fields; the CR uses camelCase. `to_camel` is the
one mapping between them, used when reading (`FieldReader`) and writing (`to_camel_dict`),
and by the drift test that compares the models with the CRD.

`FieldReader` checks a value the way the API server checks it against the CRD's schema and
words the error the same way, so an object that reached the operator without going through
the API server (an emulator, a unit test) fails with the message a user would have seen
from `kubectl apply`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, TypeVar

from ..errors import SpecError

# The patterns the CRD uses; the drift test checks they are the same strings.
UUID_PATTERN: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# search_index.object_type values.
OBJECT_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]*$"
# Table and column names for the drift queries: they are composed as SQL identifiers
# (psycopg2.sql.Identifier), and this keeps them plain ones besides.
SQL_IDENTIFIER_PATTERN: Final = r"^[a-z_][a-z0-9_]*$"
# Kubernetes' resource.Quantity, without a sign: a negative request is never meant.
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Quantity = str | int

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


def to_camel(name: str) -> str:
    """`batch_sleep_seconds` -> `batchSleepSeconds`: the CR's name of a model field."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as the API server names it in errors."""
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
    got = json_type(value)
    return SpecError(
        path, f'Invalid value: "{got}": {path} in body must be of type {expected}: "{got}"'
    )


def parse_time(value: str, path: str = "time") -> datetime:
    """An RFC 3339 timestamp (`2025-01-31T12:00:00Z`) as an aware datetime."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise SpecError(
            path, f"Invalid value: {_json(value)}: {path} in body must be of type date-time"
        ) from None
    if parsed.tzinfo is None:
        raise SpecError(path, f"Invalid value: {_json(value)}: {path} needs a time zone")
    return parsed


@functools.lru_cache(maxsize=4096)
def _shared_time(value: str) -> datetime:
    """One datetime object per distinct timestamp. A fleet's statuses repeat the same few
    (every condition set in one tick has its time): a cached operator holding thousands of
    statuses keeps one object for each, not one per condition. Datetimes are immutable."""
    return parse_time(value)


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


class FieldReader:
    """Reads one object of a CR, checking each field as the API server would.

    Each method takes the model's snake_case field name, reads the camelCase key and, only
    when the key is present (and not null), stores the checked value in `kwargs` under the
    snake_case name. The model is then built with `cls(**reader.kwargs)`, so the dataclass
    defaults are the only place defaults are written down in Python. Keys the model does not
    know are ignored, as the API server prunes them.
    """

    def __init__(self, data: Any, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise _wrong_type(path, data, "object")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.kwargs: dict[str, Any] = {}

    def _get(self, name: str, required: bool) -> tuple[str, Any] | None:
        key = to_camel(name)
        path = f"{self.path}.{key}"
        value = self.data.get(key)
        if value is None:
            # The API server drops nulls of non-nullable fields before defaulting.
            if required:
                raise SpecError(path, "Required value")
            return None
        return path, value

    def _bounds(
        self, path: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            raise SpecError(
                path,
                f"Invalid value: {_json(value)}: {path} in body should be greater than or "
                f"equal to {minimum}",
            )
        if maximum is not None and value > maximum:
            raise SpecError(
                path,
                f"Invalid value: {_json(value)}: {path} in body should be less than or "
                f"equal to {maximum}",
            )

    def integer(
        self,
        name: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        required: bool = False,
    ) -> None:
        got = self._get(name, required)
        if got is None:
            return
        path, value = got
        # JSON has one number type: 100.0 is an integer to the API server too.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, value, "integer")
        self._bounds(path, value, minimum, maximum)
        self.kwargs[name] = value

    def number(
        self, name: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> None:
        got = self._get(name, False)
        if got is None:
            return
        path, value = got
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(path, value, "number")
        self._bounds(path, value, minimum, maximum)
        self.kwargs[name] = float(value)

    def boolean(self, name: str) -> None:
        got = self._get(name, False)
        if got is None:
            return
        path, value = got
        if not isinstance(value, bool):
            raise _wrong_type(path, value, "boolean")
        self.kwargs[name] = value

    def _check_string(
        self,
        path: str,
        value: Any,
        pattern: str | None,
        min_length: int | None,
        max_length: int | None,
    ) -> str:
        if not isinstance(value, str):
            raise _wrong_type(path, value, "string")
        if max_length is not None and len(value) > max_length:
            raise SpecError(path, f"Too long: may not be longer than {max_length}")
        if min_length is not None and len(value) < min_length:
            raise SpecError(
                path,
                f"Invalid value: {_json(value)}: {path} in body should be at least "
                f"{min_length} chars long",
            )
        if pattern is not None and not re.search(pattern, value):
            raise SpecError(
                path, f"Invalid value: {_json(value)}: {path} in body should match '{pattern}'"
            )
        return value

    def string(
        self,
        name: str,
        *,
        pattern: str | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        required: bool = False,
    ) -> None:
        got = self._get(name, required)
        if got is None:
            return
        path, value = got
        self.kwargs[name] = self._check_string(path, value, pattern, min_length, max_length)

    def enum(self, name: str, enum: type[E], *, required: bool = False) -> None:
        got = self._get(name, required)
        if got is None:
            return
        path, value = got
        if not isinstance(value, str):
            raise _wrong_type(path, value, "string")
        try:
            self.kwargs[name] = enum(value)
        except ValueError:
            supported = ", ".join(_json(member.value) for member in enum)
            raise SpecError(
                path, f"Unsupported value: {_json(value)}: supported values: {supported}"
            ) from None

    def timestamp(self, name: str, *, required: bool = False) -> None:
        got = self._get(name, required)
        if got is None:
            return
        path, value = got
        if isinstance(value, datetime):
            self.kwargs[name] = value
            return
        if not isinstance(value, str):
            raise _wrong_type(path, value, "string")
        try:
            self.kwargs[name] = _shared_time(value)
        except SpecError:
            self.kwargs[name] = parse_time(value, path)  # raises, naming the field

    def quantity(self, name: str) -> None:
        """An int-or-string Kubernetes quantity, kept as written."""
        got = self._get(name, False)
        if got is None:
            return
        path, value = got
        if isinstance(value, bool) or not isinstance(value, int | str):
            got_type = json_type(value)
            raise SpecError(
                path,
                f'Invalid value: "{got_type}": {path} in body must be of type '
                f'integer or string: "{got_type}"',
            )
        if isinstance(value, str):
            self._check_string(path, value, QUANTITY_PATTERN, None, None)
        elif value < 0:
            # The CRD cannot say this of the integer form; the Job would be refused.
            raise SpecError(
                path, f"Invalid value: {_json(value)}: must be greater than or equal to 0"
            )
        self.kwargs[name] = value

    def _list(self, name: str, max_items: int | None) -> tuple[str, list[Any]] | None:
        got = self._get(name, False)
        if got is None:
            return None
        path, value = got
        if not isinstance(value, list | tuple):
            raise _wrong_type(path, value, "array")
        if max_items is not None and len(value) > max_items:
            raise SpecError(path, f"Too many: {len(value)}: must have at most {max_items} items")
        return path, list(value)

    def string_set(
        self,
        name: str,
        *,
        pattern: str | None = None,
        max_length: int | None = None,
        max_items: int | None = None,
    ) -> None:
        """A list of distinct strings (`x-kubernetes-list-type: set`)."""
        got = self._list(name, max_items)
        if got is None:
            return
        path, items = got
        seen: set[str] = set()
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]"
            self._check_string(item_path, item, pattern, None, max_length)
            if item in seen:
                raise SpecError(item_path, f"Duplicate value: {_json(item)}")
            seen.add(item)
        self.kwargs[name] = tuple(items)

    def objects(
        self,
        name: str,
        parse: Callable[[Any, str], T],
        *,
        max_items: int | None = None,
    ) -> None:
        """A list of objects, each read by `parse(item, path)`."""
        got = self._list(name, max_items)
        if got is None:
            return
        path, items = got
        self.kwargs[name] = tuple(
            parse(item, f"{path}[{index}]") for index, item in enumerate(items)
        )

    def nested(self, name: str, parse: Callable[[Any, str], T]) -> None:
        """An object, read by `parse(value, path)`."""
        got = self._get(name, False)
        if got is None:
            return
        path, value = got
        self.kwargs[name] = parse(value, path)


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
