"""Relayer settings come from FEDRELAY_* variables and refuse bad values with a clear error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support.wormhole import guardian_set

from fedrelay.relayer.settings import RelayerSettings


def test_environment_configures_the_relayer(monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = ["0x" + a.hex() for a in guardian_set(3).addresses]
    monkeypatch.setenv("FEDRELAY_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("FEDRELAY_GUARDIAN_API_URL", "https://api.example/")
    monkeypatch.setenv("FEDRELAY_GUARDIAN_ADDRESSES", '["' + '","'.join(addresses) + '"]')
    monkeypatch.setenv("FEDRELAY_INSTANCE", "7")
    settings = RelayerSettings()
    assert settings.kafka_bootstrap == "broker:9092"
    assert settings.guardian_api_url == "https://api.example"
    assert settings.delivery_topic(4) == "deliveries.4"
    assert settings.group("assemble") == "fedrelay-assemble"
    assert settings.transactional_id("assemble") == "fedrelay-assemble-7"
    sets = settings.guardian_sets()
    assert sets is not None
    assert sets.current == guardian_set(3)
    assert settings.retry_policy().max_attempts == 8
    options = settings.runner_options("fetch")
    assert options["group_id"] == "fedrelay-fetch"
    assert options["transactional_id"] == "fedrelay-fetch-7"
    assert options["dlq_topic"] == "dlq"


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEDRELAY_KAFKA_BOOTSTRAP", "FEDRELAY_GUARDIAN_ADDRESSES"):
        monkeypatch.delenv(name, raising=False)
    settings = RelayerSettings()
    assert settings.kafka_bootstrap is None
    assert settings.guardian_sets() is None


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("FEDRELAY_GUARDIAN_ADDRESSES", '["0x1234"]', "must be 20 bytes"),
        ("FEDRELAY_GUARDIAN_API_URL", "ftp://x", "must start with http:// or https://"),
        ("FEDRELAY_BATCH_SIZE", "0", "greater than or equal to 1"),
    ],
)
def test_bad_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=complaint):
        RelayerSettings()
