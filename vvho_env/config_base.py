"""The base of every config model, and the one-line error it gives for each bad field.

``StrictModel`` is frozen and forbids unknown fields. Before pydantic sees a value it coerces
integer-like input for integer fields (``1e5``, ``"100_000"``, ``2.0``; YAML reads ``1e5`` as a string)
and refuses booleans where a number is expected (pydantic would read ``true`` as 1); floats must be
finite everywhere. ``field_errors`` turns a ``ValidationError`` into one line per bad field, naming
the source, the dotted field path, the value given and what the field accepts, derived from the
field's own type and bounds so that the message cannot drift from the model.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, Union

import annotated_types as at
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from vvho_env.errors import did_you_mean

_NUMERIC = re.compile(r"^[+-]?(\d[\d_]*)?(\.\d*)?([eE][+-]?\d+)?$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _coerce_numbers(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = dict(raw)
        for name, value in raw.items():
            field = cls.model_fields.get(name)
            if field is not None:
                try:
                    out[name] = _coerce(value, field.annotation)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return out


def _coerce(value: Any, annotation: Any) -> Any:
    """Integer-like input to int for int fields (also inside lists); booleans refused for numbers."""
    base, _ = _unwrap(annotation)
    origin = typing.get_origin(base)
    if origin in (list, tuple) and isinstance(value, list | tuple):
        args = typing.get_args(base)
        return type(value)(_coerce(v, args[0]) for v in value) if args else value
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(base) if a is not type(None)]
        if value is None or not any(_unwrap(m)[0] in (int, float) for m in members):
            return value
        if all(_unwrap(m)[0] in (int, float) for m in members):
            return _coerce(value, members[0])
        return value
    if base in (int, float) and isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if base is int:
        return int_like(value)
    return value


def int_like(value: Any) -> Any:
    """An int for integer-like input (1e5, '100_000', 2.0); anything else unchanged."""
    if isinstance(value, str) and _NUMERIC.match(value.strip()) and any(c.isdigit() for c in value):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            value = float(text)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(bare type, constraint metadata) of a possibly Annotated type."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        flat: list[Any] = []
        for m in meta:
            flat.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        return base, flat
    return annotation, []


def _bounds(meta: Sequence[Any]) -> str:
    lo = hi = ""
    for m in meta:
        if isinstance(m, at.Ge):
            lo = f">= {_num(m.ge)}"
        elif isinstance(m, at.Gt):
            lo = f"> {_num(m.gt)}"
        elif isinstance(m, at.Le):
            hi = f"<= {_num(m.le)}"
        elif isinstance(m, at.Lt):
            hi = f"< {_num(m.lt)}"
    return " and ".join(p for p in (lo, hi) if p)


def _num(v: Any) -> str:
    return f"{v:,}".replace(",", "_") if isinstance(v, int) and abs(v) >= 10_000 else str(v)


def _lengths(meta: Sequence[Any]) -> str:
    lo = next((m.min_length for m in meta if isinstance(m, at.MinLen)), 0)
    hi = next((m.max_length for m in meta if isinstance(m, at.MaxLen)), None)
    if hi is not None:
        return f"{lo} to {hi} entries"
    return f"at least {lo} entr{'y' if lo == 1 else 'ies'}" if lo else ""


def describe(annotation: Any, meta: Sequence[Any] = ()) -> str:
    """What a field of this type and these constraints accepts, in words."""
    base, inner = _unwrap(annotation)
    meta = [*meta, *inner]
    origin = typing.get_origin(base)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(base))
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(base) if a is not type(None)]
        text = " or ".join(describe(m, meta) for m in members)
        return text + (" or null (the default)" if len(members) < len(typing.get_args(base)) else "")
    if origin in (list, tuple):
        args = typing.get_args(base)
        items = describe(args[0]) if args else "values"
        size = _lengths(meta)
        return f"a list of {_plural(items)}" + (f", {size}" if size else "")
    if base is bool:
        return "true or false"
    if base is int:
        b = _bounds(meta)
        return "an integer" + (f" {b}" if b else "") + " (1e5 and 100_000 work)"
    if base is float:
        b = _bounds(meta)
        return "a finite number" + (f" {b}" if b else "")
    if base is str:
        return "a string"
    if isinstance(base, type) and issubclass(base, BaseModel):
        return f"a mapping with fields {', '.join(base.model_fields)}"
    return getattr(base, "__name__", str(base))


def _plural(text: str) -> str:
    for one, many in (("an integer", "integers"), ("a finite number", "finite numbers"), ("a string", "strings")):
        if text.startswith(one):
            return many + text[len(one):]
    return text


def accepted(field: FieldInfo) -> str:
    """A field's own statement (json_schema_extra 'accepted') or one derived from its type and bounds."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("accepted"), str):
        return str(extra["accepted"])
    return describe(field.annotation, field.metadata)


def _members(annotation: Any) -> list[Any]:
    """The non-None members of a union (the type itself when it is no union)."""
    base, _ = _unwrap(annotation)
    if typing.get_origin(base) in (Union, types.UnionType):
        return [a for a in typing.get_args(base) if a is not type(None)]
    return [base]


def resolve(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[str, FieldInfo | None, type[BaseModel] | None]:
    """Walk an error location through the models: (dotted path without union tags, the field at the
    end or None, the model that owns the last name)."""
    path: list[str] = []
    current: Any = model
    field: FieldInfo | None = None
    owner: type[BaseModel] | None = None
    tags: dict[str, type[BaseModel]] = {}
    for part in loc:
        if isinstance(part, str) and part in tags:  # pydantic puts a discriminated union's tag in the path
            current, tags = tags[part], {}
            continue
        if tags:  # a path into a union that names no tag (a cross-field check): the first member with it
            current = next((m for m in tags.values() if part in m.model_fields), current)
            tags = {}
        path.append(_part(part))
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            owner, field = current, current.model_fields.get(part)
            current = field.annotation if field is not None else None
            if field is not None and isinstance(field.discriminator, str):
                disc = field.discriminator
                tags = {str(typing.get_args(m.model_fields[disc].annotation)[0]): m for m in _members(current)}
            continue
        if isinstance(part, int):
            args = typing.get_args(_members(current)[0]) if current is not None else ()
            current = args[0] if args else None
            continue
        field, current = None, None
    return ".".join(path) or "<top level>", field, owner


def _part(part: int | str) -> str:
    """A path element as the user wrote it, quoted when it would not read as one (spaces, control codes)."""
    text = str(part)
    return text if text and text.isprintable() and not any(c.isspace() or c == "." for c in text) else repr(text)


def field_errors(source: str, exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per error: '<source>: field <path>: <value> not accepted (<why>); accepted: <what>'."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        path, field, owner = resolve(model, loc)
        given = err.get("input")
        if err["type"] == "extra_forbidden":
            known = list(owner.model_fields) if owner is not None else []
            name = str(loc[-1])  # did_you_mean compares the raw name; the path shows it quoted if need be
            lines.append(f"{source}: field {path}: unknown field{did_you_mean(name, known)}; "
                         f"accepted here: {', '.join(known)}")
            continue
        why = _reason(err)
        named = _NAMED.match(why)
        if named is not None:
            # a cross-field check of a model names its field first ("knob_names: ...")
            sub = [*loc, *named.group(1).split(".")]
            path, field, owner = resolve(model, sub)
            if field is not None:
                loc, why = sub, f" ({named.group(2)}"
                given = _value_at(err.get("input"), named.group(1))
        what = accepted(field) if field is not None and not _is_list_item(loc) else _item_accepted(model, loc)
        if named is not None and given is None:  # a default that a cross-field check refuses
            lines.append(f"{source}: field {path}: {why.strip()[1:-1]}; accepted: {what}")
            continue
        lines.append(f"{source}: field {path}: {_show(given)} not accepted{why}; accepted: {what}")
    return lines


_NAMED = re.compile(r"^ \((\w+(?:\.\w+)*): (.*)$", re.S)


def _value_at(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def _is_list_item(loc: Sequence[int | str]) -> bool:
    return bool(loc) and isinstance(loc[-1], int)


def _item_accepted(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    _, field, _ = resolve(model, loc[:-1])
    if field is None:
        return "see the JSON schema of the configs"
    args = typing.get_args(_members(field.annotation)[0])
    return f"each entry {describe(args[0])}" if args else accepted(field)


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind in ("value_error", "assertion_error"):
        msg = str(err.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return f" ({msg})"
    if kind in ("missing",):
        return " (required)"
    return ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
