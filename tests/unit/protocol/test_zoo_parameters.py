"""Zoo models from command-line parameters: values as typed, sizes from the job's data schema,
defaults elsewhere, and refusals that name the model, the parameter and what is allowed."""

from __future__ import annotations

import pytest

from fedrelay.protocol.data_spec import PublishedData, WorkerData
from fedrelay.protocol.model_spec import CnnSpec, LoraSpec, MlpSpec, TransformerLMSpec
from fedrelay.protocol.model_zoo import (
    ZOO,
    ZooError,
    parse_params,
    schema_sizes,
    zoo_model,
    zoo_parameters,
)

BASE_WEIGHTS = "ab" * 32


def _worker_data(schema: dict[str, object]) -> WorkerData:
    return WorkerData.model_validate({"schema": schema, "replay": "none"})


IMAGES = _worker_data({"kind": "image", "channels": 3, "height": 16, "width": 12, "classes": 5})
TEXT = _worker_data({"kind": "text", "tokenizer": "bytes", "vocab": 256, "context": 48})
TABLE = _worker_data({"kind": "tabular", "features": [13], "classes": 3})


def test_parameters_are_read_as_their_fields_take_them() -> None:
    spec = zoo_model("cnn", parse_params(["filters=8, 16,32", "hidden=24", "init_seed=7"]))
    assert spec == CnnSpec(filters=(8, 16, 32), hidden=24, init_seed=7)
    lm = zoo_model("transformer_lm", {"vocab": "300", "context": "16", "dropout": "0.25"})
    assert lm == TransformerLMSpec(vocab=300, context=16, dropout=0.25)


def test_unset_parameters_keep_the_zoos_defaults() -> None:
    assert zoo_model("mlp", {}) == MlpSpec()
    assert zoo_model("mlp", {}, PublishedData()) == MlpSpec()
    assert zoo_model("cnn", {"hidden": "32"}) == CnnSpec(hidden=32)


def test_a_lora_base_is_sized_with_dotted_parameters() -> None:
    spec = zoo_model(
        "lora",
        {"base.vocab": "128", "base.context": "32", "base.width": "96", "base.heads": "3",
         "base_weights": BASE_WEIGHTS, "rank": "2", "alpha": "4", "targets": "attention"},
    )  # fmt: skip
    assert isinstance(spec, LoraSpec)
    assert spec.base == TransformerLMSpec(vocab=128, context=32, width=96, heads=3)
    assert (spec.rank, spec.alpha, spec.targets) == (2, 4.0, ("attention",))
    assert "base.width" in zoo_parameters("lora")
    assert "base" not in zoo_parameters("lora")


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("cnn", IMAGES, CnnSpec(channels=3, height=16, width=12, classes=5)),
        ("mlp", TABLE, MlpSpec(inputs=13, classes=3)),
        ("transformer_lm", TEXT, TransformerLMSpec(vocab=256, context=48)),
    ],
)
def test_the_sizes_the_data_schema_fixes_come_from_it(
    name: str, data: WorkerData, expected: object
) -> None:
    assert zoo_model(name, {}, data) == expected


def test_a_lora_base_takes_its_vocabulary_and_context_from_a_text_schema() -> None:
    spec = zoo_model("lora", {"base_weights": BASE_WEIGHTS, "base.width": "32"}, TEXT)
    assert isinstance(spec, LoraSpec)
    assert (spec.base.vocab, spec.base.context, spec.base.width) == (256, 48, 32)
    assert schema_sizes("lora", TEXT) == {"base.vocab": 256, "base.context": 48}
    assert schema_sizes("mlp", IMAGES) == {}  # an MLP does not flatten images


def test_a_size_that_contradicts_the_schema_is_refused() -> None:
    with pytest.raises(ZooError) as refused:
        zoo_model("cnn", {"classes": "7"}, IMAGES)
    assert str(refused.value) == (
        "--model-param classes=7 contradicts the job's data schema, whose classes is 5 (leave "
        "classes out to take it from the schema)"
    )
    agreeing = zoo_model("cnn", {"classes": "5"}, IMAGES)
    assert agreeing == CnnSpec(channels=3, height=16, width=12, classes=5)


def test_an_unknown_model_is_refused_with_the_zoos_names() -> None:
    with pytest.raises(ZooError) as refused:
        zoo_model("resnet", {})
    assert str(refused.value) == (
        "--model-zoo 'resnet' is not in the zoo; its models are mlp, cnn, transformer_lm, lora "
        "(a model of your own: --model-bundle DIR)"
    )
    assert list(ZOO) == ["mlp", "cnn", "transformer_lm", "lora"]


def test_an_unknown_parameter_is_refused_with_the_models_parameters() -> None:
    with pytest.raises(ZooError) as refused:
        zoo_model("cnn", {"hidden": "8", "depth": "3"})
    assert str(refused.value) == (
        "--model-param depth: cnn has no parameter 'depth'; its parameters are channels, "
        "height, width, classes, filters, hidden, init_seed"
    )
    with pytest.raises(ZooError, match="mlp has no parameter 'kind'"):
        zoo_model("mlp", {"kind": "cnn"})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mlp", {"hidden": "6.5"}, "--model-param hidden=6.5: Input should be a valid integer"),
        ("mlp", {"hidden": "0"}, "--model-param hidden=0: Input should be greater than or equal"),
        ("cnn", {"filters": "16,x"}, "--model-param filters=16,x: Input should be a valid int"),
        ("cnn", {"filters": "8,0"}, "--model-zoo cnn: filters must each be in 1..4096"),
        (
            "transformer_lm",
            {"vocab": "64", "context": "8", "width": "30"},
            "--model-zoo transformer_lm: width 30 is not a multiple of heads 4",
        ),
        (
            "lora",
            {
                "base_weights": BASE_WEIGHTS,
                "base.vocab": "64",
                "base.context": "8",
                "base.heads": "5",
            },
            "--model-zoo lora base: width 64 is not a multiple of heads 5",
        ),
        (
            "lora",
            {"base.vocab": "64", "base.context": "8", "base_weights": "zz"},
            "--model-param base_weights=zz: String should match pattern",
        ),
        (
            "lora",
            {
                "base.vocab": "64",
                "base.context": "8",
                "base_weights": BASE_WEIGHTS,
                "targets": "attention,everything",
            },
            "--model-param targets=attention,everything: Input should be 'attention' or 'mlp'",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_the_parameter(
    name: str, params: dict[str, str], message: str
) -> None:
    with pytest.raises(ZooError) as refused:
        zoo_model(name, params)
    assert str(refused.value).startswith(message)


def test_required_parameters_left_out_are_named_together() -> None:
    with pytest.raises(ZooError) as refused:
        zoo_model("transformer_lm", {"width": "32"})
    assert str(refused.value) == (
        "transformer_lm needs --model-param vocab=VALUE and --model-param context=VALUE "
        "(no default)"
    )
    with pytest.raises(ZooError, match=r"lora needs .*--model-param base_weights=VALUE"):
        zoo_model("lora", {}, TEXT)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["hidden"], "--model-param 'hidden' is not KEY=VALUE (e.g. hidden=64)"),
        (["=3"], "--model-param '=3' is not KEY=VALUE (e.g. hidden=64)"),
        (["hidden=3", "hidden=4"], "--model-param hidden is given twice ('3' and '4')"),
    ],
)
def test_malformed_parameter_texts_are_refused(texts: list[str], message: str) -> None:
    with pytest.raises(ZooError) as refused:
        parse_params(texts)
    assert str(refused.value) == message
