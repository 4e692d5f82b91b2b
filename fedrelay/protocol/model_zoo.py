"""A zoo model named on the command line: ``--model-zoo cnn --model-param filters=16,32``.

A poster who wants a built-in model should not have to write the ``model`` object of a job
configuration by hand. :func:`zoo_model` builds it from a zoo name and ``KEY=VALUE`` texts, the
values as typed (numbers, and comma-separated lists for list fields such as ``filters`` and
``targets``; a LoRA model's base is sized with ``base.KEY``). What it refuses, it refuses by name,
before anything is built or uploaded: an unknown model (with the zoo's names), an unknown
parameter (with the model's parameters), a value its field does not take (with the field's rule),
a required parameter left out, and a size that contradicts the job's data schema.

The sizes a worker's data fixes (a tabular schema's feature count and classes for ``mlp``, an
image schema's channels, height, width and classes for ``cnn``, a text schema's vocabulary and
context for ``transformer_lm`` and a LoRA base) default to the job's schema, so that the model
fits the data every worker is checked against; every other parameter defaults to the zoo's
default (:mod:`fedrelay.protocol.model_spec`). This module is pure: nothing is built here.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from fedrelay.protocol.data_spec import (
    DataSource,
    ImageSchema,
    TabularSchema,
    TextSchema,
    WorkerData,
)
from fedrelay.protocol.model_spec import (
    AnyModelSpec,
    CnnSpec,
    LoraSpec,
    MlpSpec,
    TransformerLMSpec,
)

__all__ = ["ZOO", "ZooError", "parse_params", "schema_sizes", "zoo_model", "zoo_parameters"]

ZOO: dict[str, type[MlpSpec | CnnSpec | TransformerLMSpec | LoraSpec]] = {
    "mlp": MlpSpec,
    "cnn": CnnSpec,
    "transformer_lm": TransformerLMSpec,
    "lora": LoraSpec,
}
"""The built-in models by name, as ``--model-zoo`` takes them."""

_BASE = "base."
_NESTED = "base"


class ZooError(ValueError):
    """A zoo name or parameter is refused; the message names it and what is allowed."""


def _fields(spec: type[BaseModel]) -> list[str]:
    return [name for name in spec.model_fields if name != "kind"]


def zoo_parameters(name: str) -> list[str]:
    """The parameters of zoo model ``name``, in declaration order (a LoRA base's as ``base.X``).

    Raises:
        ZooError: ``name`` is not in the zoo.
    """
    spec = _spec(name)
    names: list[str] = []
    for field in _fields(spec):
        if field == _NESTED and spec is LoraSpec:
            names += [_BASE + f for f in _fields(TransformerLMSpec)]
        else:
            names.append(field)
    return names


def _spec(name: str) -> type[MlpSpec | CnnSpec | TransformerLMSpec | LoraSpec]:
    try:
        return ZOO[name]
    except KeyError:
        raise ZooError(
            f"--model-zoo {name!r} is not in the zoo; its models are {', '.join(ZOO)} "
            "(a model of your own: --model-bundle DIR)"
        ) from None


def parse_params(texts: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` texts as a mapping (values stay text until :func:`zoo_model` reads them).

    Raises:
        ZooError: A text has no ``=`` or an empty key, or a key is given twice.
    """
    params: dict[str, str] = {}
    for text in texts:
        key, equals, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise ZooError(f"--model-param {text!r} is not KEY=VALUE (e.g. hidden=64)")
        if key in params:
            raise ZooError(f"--model-param {key} is given twice ({params[key]!r} and {value!r})")
        params[key] = value
    return params


def schema_sizes(name: str, data: DataSource | None) -> dict[str, int]:
    """The sizes of zoo model ``name`` that the job's worker-data schema fixes (none for
    published data: its model sizes are the zoo's defaults, the digits' 64 inputs and 10
    classes)."""
    schema = data.schema_ if isinstance(data, WorkerData) else None
    if isinstance(schema, TabularSchema):
        if name == "mlp" and len(schema.features) == 1:
            return {"inputs": schema.features[0], "classes": schema.classes}
        if name == "cnn" and len(schema.features) == 3:
            channels, height, width = schema.features
            return {"channels": channels, "height": height, "width": width,
                    "classes": schema.classes}  # fmt: skip
    if isinstance(schema, ImageSchema) and name == "cnn":
        return {"channels": schema.channels, "height": schema.height, "width": schema.width,
                "classes": schema.classes}  # fmt: skip
    if isinstance(schema, TextSchema):
        sizes = {"vocab": schema.vocab, "context": schema.context}
        if name == "transformer_lm":
            return sizes
        if name == "lora":
            return {_BASE + key: value for key, value in sizes.items()}
    return {}


def _value(spec: type[BaseModel], field: str, text: str) -> object:
    """``text`` as the field takes it: split at commas for a list field, else as typed."""
    annotation = spec.model_fields[field].annotation
    if typing.get_origin(annotation) is tuple:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _document(name: str, params: Mapping[str, str], sizes: Mapping[str, int]) -> dict[str, object]:
    spec = _spec(name)
    allowed = zoo_parameters(name)
    unknown = [key for key in params if key not in allowed]
    if unknown:
        raise ZooError(
            f"--model-param {unknown[0]}: {name} has no parameter {unknown[0]!r}; its parameters "
            f"are {', '.join(allowed)}"
        )
    document: dict[str, object] = {}
    base: dict[str, object] = {}
    for key, size in sizes.items():
        (base if key.startswith(_BASE) else document)[key.removeprefix(_BASE)] = size
    for key, text in params.items():
        if key.startswith(_BASE):
            base[key.removeprefix(_BASE)] = _value(TransformerLMSpec, key.removeprefix(_BASE), text)
        else:
            document[key] = _value(spec, key, text)
    if spec is LoraSpec:
        document[_NESTED] = base
    return document


def _where(loc: Sequence[int | str]) -> str:
    """The parameter a validation error's location names (``base.vocab``, ``filters``)."""
    names = [str(part) for part in loc if isinstance(part, str)]
    return ".".join(names[:2] if names[:1] == [_NESTED] else names[:1])


def _refusal(
    name: str, params: Mapping[str, str], sizes: Mapping[str, int], exc: ValidationError
) -> ZooError:
    problems, missing = [], []
    for error in exc.errors():
        key = _where(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            missing.append(f"--model-param {key}=VALUE")
        elif key in params:
            problems.append(f"--model-param {key}={params[key]}: {message}")
        elif key in sizes:
            problems.append(f"{key} {sizes[key]} (from the job's data schema): {message}")
        else:
            where = f"{name} {key}" if key else name
            problems.append(f"--model-zoo {where}: {message}")
    if missing:
        problems.insert(0, f"{name} needs {' and '.join(missing)} (no default)")
    return ZooError("; ".join(dict.fromkeys(problems)))


def zoo_model(name: str, params: Mapping[str, str], data: DataSource | None = None) -> AnyModelSpec:
    """The job configuration's ``model`` for zoo model ``name`` with ``params``.

    Args:
        name: ``mlp``, ``cnn``, ``transformer_lm`` or ``lora``.
        params: Parameter texts by name (:func:`parse_params`); ``base.X`` sizes a LoRA base.
        data: The job's data; a worker-data schema supplies the sizes it fixes
            (:func:`schema_sizes`).

    Returns:
        The model spec: the given parameters, the schema's sizes, the zoo's defaults.

    Raises:
        ZooError: An unknown model or parameter, a value the field refuses, a required
            parameter missing, or a size that contradicts the job's data schema (each named).
    """
    sizes = schema_sizes(name, data)
    spec_type = _spec(name)
    try:
        spec = spec_type.model_validate(_document(name, params, sizes))
    except ValidationError as exc:
        raise _refusal(name, params, sizes, exc) from None
    for key, size in sizes.items():
        if key not in params:
            continue
        given = spec.base if isinstance(spec, LoraSpec) and key.startswith(_BASE) else spec
        value = getattr(given, key.removeprefix(_BASE))
        if value != size:
            field = key.removeprefix(_BASE)
            raise ZooError(
                f"--model-param {key}={params[key]} contradicts the job's data schema, whose "
                f"{field} is {size} (leave {key} out to take it from the schema)"
            )
    return spec
