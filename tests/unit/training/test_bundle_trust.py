"""The bundle allowlist: hashes, signers (by address or public key), trust files, settings."""

from __future__ import annotations

from pathlib import Path

import coincurve
import pytest
from eth_account import Account

from fedrelay.coordinator.settings import CoordinatorSettings
from fedrelay.training.trust import (
    TrustFileError,
    TrustPolicy,
    bundle_signer,
    read_trust_file,
    sign_bundle,
    signer_address,
    split_entries,
)

KEY = "0x" + "4c" * 32
ADDRESS = Account.from_key(KEY).address.lower()
BUNDLE = "ab" * 32
OTHER = "cd" * 32


def test_a_signature_recovers_the_posters_address_for_that_bundle_only() -> None:
    signature = sign_bundle(BUNDLE, KEY)
    assert len(bytes.fromhex(signature)) == 65
    assert bundle_signer(BUNDLE, signature) == ADDRESS
    assert bundle_signer(OTHER, signature) != ADDRESS
    assert bundle_signer(BUNDLE, "") is None
    assert bundle_signer(BUNDLE, "zz" * 65) is None


def test_a_signer_is_named_by_address_or_public_key() -> None:
    public = coincurve.PrivateKey(bytes.fromhex(KEY[2:])).public_key
    for form in (
        ADDRESS.upper().replace("0X", "0x"),
        public.format(compressed=True).hex(),
        public.format(compressed=False).hex(),
        public.format(compressed=False)[1:].hex(),
    ):
        assert signer_address(form) == ADDRESS
    with pytest.raises(ValueError, match="is not a signer"):
        signer_address("0x1234")


def test_the_trust_file_takes_hashes_signers_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "trusted"
    path.write_text(f"# reviewed bundles\n0x{BUNDLE.upper()}   # the CNN\n\nsigner {ADDRESS}\n")
    policy = read_trust_file(path)
    assert policy == TrustPolicy(frozenset({BUNDLE}), frozenset({ADDRESS}))
    assert policy.allows(BUNDLE)
    assert not policy.allows(OTHER)
    assert policy.allows(OTHER, sign_bundle(OTHER, KEY))
    assert not policy.allows(OTHER, sign_bundle(OTHER, "0x" + "5d" * 32))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not-a-hash", "expected a bundle hash"),
        ("ab" * 31, "expected a bundle hash"),
        ("signer 0x1234", "is not a signer"),
        ("signer", "expected a bundle hash"),
    ],
)
def test_a_bad_trust_file_line_is_named(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "trusted"
    path.write_text(f"{BUNDLE}\n{line}\n")
    with pytest.raises(TrustFileError, match=reason) as refused:
        read_trust_file(path)
    assert f"{path} line 2" in str(refused.value)


def test_an_unreadable_trust_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrustFileError, match=r"cannot read trust file .*absent"):
        TrustPolicy.of(files=[tmp_path / "absent"])


def test_options_and_files_add_up(tmp_path: Path) -> None:
    path = tmp_path / "trusted"
    path.write_text(f"signer {ADDRESS}\n")
    policy = TrustPolicy.of(split_entries([f"{BUNDLE}, {OTHER}"]), [], [path])
    assert policy.hashes == {BUNDLE, OTHER}
    assert policy.signers == {ADDRESS}
    with pytest.raises(TrustFileError, match="not a bundle hash"):
        TrustPolicy.of(["abc"])


def test_the_coordinator_reads_its_trust_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trusted"
    path.write_text(f"{OTHER}\n")
    monkeypatch.setenv("FEDRELAY_TRUST_MODELS", f"{BUNDLE},0x{'ee' * 32}")
    monkeypatch.setenv("FEDRELAY_TRUST_SIGNERS", ADDRESS)
    monkeypatch.setenv("FEDRELAY_TRUST_FILE", str(path))
    settings = CoordinatorSettings()
    assert settings.trust_models == (BUNDLE, "0x" + "ee" * 32)
    policy = settings.trust_policy(["12" * 32])
    assert policy.hashes == {BUNDLE, "ee" * 32, OTHER, "12" * 32}
    assert policy.signers == {ADDRESS}
