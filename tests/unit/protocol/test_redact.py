"""URLs and messages are shown without passwords, query values or API keys in their paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedrelay.protocol.redact import forget_all, redact_text, redact_url, remember, secrets_of


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    forget_all()
    yield
    forget_all()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef",
            "https://mainnet.infura.io/v3/***",
        ),
        ("https://eth-mainnet.g.alchemy.com/v2/abc123", "https://eth-mainnet.g.alchemy.com/v2/***"),
        (
            "https://name.quiknode.pro/7f3a9c2b1d4e5f60718293a4b5c6d7e8f9a0b1c2/",
            "https://name.quiknode.pro/***/",
        ),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        (
            "http://rpc.example/v1/mainnet?apikey=k3y&chain=1",
            "http://rpc.example/v1/mainnet?apikey=***&chain=***",
        ),
        (
            "postgresql+asyncpg://fed:p%40ss%25w%3Ad@db.internal:5432/ledger",
            "postgresql+asyncpg://fed:***@db.internal:5432/ledger",
        ),
        ("postgresql+asyncpg://fed:p@ss@db/ledger", "postgresql+asyncpg://fed:***@db/ledger"),
        ("postgresql+asyncpg://fed@db/ledger", "postgresql+asyncpg://fed@db/ledger"),
        (
            "sqlite+aiosqlite:////var/lib/fedrelay/a-rather-long-directory-name/ledger.db",
            "sqlite+aiosqlite:////var/lib/fedrelay/a-rather-long-directory-name/ledger.db",
        ),
        ("https://host/x#access_token=t", "https://host/x#***"),
        ("not a url at all", "<not a URL>"),
        ("hunter2-without-a-scheme", "<not a URL>"),
    ],
)
def test_redact_url_masks_each_kind_of_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_is_idempotent() -> None:
    url = "https://u:pw@rpc.example/v3/0123456789abcdef0123?apikey=k"
    once = redact_url(url)
    assert redact_url(once) == once


def test_secrets_of_gives_raw_and_decoded_forms() -> None:
    secrets = secrets_of("postgresql+asyncpg://fed:p%40ss%25w%3Ad@db/ledger?ssl=req%3Dx")
    assert {"p%40ss%25w%3Ad", "p@ss%w:d", "req%3Dx", "req=x"} <= secrets


def test_redact_text_masks_urls_and_their_pieces() -> None:
    url = "http://127.0.0.1:9/v3/SECRETTOKEN0123456789?apikey=SECRET-TWO"
    message = (
        f"cannot reach {url}: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries "
        "exceeded with url: /v3/SECRETTOKEN0123456789?apikey=SECRET-TWO"
    )
    shown = redact_text(message, [url])
    assert "SECRETTOKEN" not in shown
    assert "SECRET-TWO" not in shown
    assert "http://127.0.0.1:9/v3/***?apikey=***" in shown


def test_redact_text_masks_any_url_without_being_told() -> None:
    shown = redact_text("401 Unauthorized for url 'https://u:hunter22@h/v2/k3yk3yk3y'")
    assert shown == "401 Unauthorized for url 'https://u:***@h/v2/***'"


def test_remembered_urls_are_masked_in_every_later_text() -> None:
    remember("postgresql+asyncpg://fed:Sup3r%40Secret@db/ledger", None)
    assert redact_text("auth failed with Sup3r@Secret") == "auth failed with ***"
    assert redact_text("auth failed with Sup3r%40Secret") == "auth failed with ***"


def test_short_secrets_are_masked_only_inside_their_url() -> None:
    url = "postgresql+asyncpg://fed:ab@db/ledger"
    assert redact_text(f"about {url}", [url]) == "about postgresql+asyncpg://fed:***@db/ledger"
