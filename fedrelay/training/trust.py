"""Which model bundles this machine runs: an allowlist of bundle hashes and of their signers.

A model bundle (:mod:`fedrelay.training.bundles`) is the job poster's Python code, and loading
it runs that code here, with this process's rights (its files, keys and network). So a worker
or coordinator runs a bundle only when its operator said so, in one of two ways:

- by hash: ``--trust-model HASH`` (repeatable; ``FEDRELAY_TRUST_MODELS``, comma-separated), or a
  line ``HASH`` in the trust file: exactly that code, whoever posts it;
- by signer: a line ``signer KEY`` in the trust file (``--trust-signer KEY``,
  ``FEDRELAY_TRUST_SIGNERS``): every bundle that key signed. ``KEY`` is an Ethereum address
  (``0x`` + 40 hex digits) or a secp256k1 public key (33 or 65 bytes in hex; 64 without the
  ``04`` prefix), which stands for its address.

The trust file (``--trust-file PATH``, ``FEDRELAY_TRUST_FILE``) holds one entry per line; ``#``
starts a comment, blank lines are skipped, a ``0x`` before a hash is optional::

    # the CNN we reviewed on 2026-11-02
    5c0ffee0d15ea5e5c0ffee0d15ea5e5c0ffee0d15ea5e5c0ffee0d15ea5e5c0f
    # everything our research team's posting key signs
    signer 0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1

A signature is the poster's EIP-191 ``personal_sign``, with the EVM key it posts jobs with, of
the UTF-8 message ``fedrelay-model-bundle/1\\n<hash>`` (:func:`sign_bundle`); it travels in the
job configuration's model entry (``signature``) next to the hash. The domain line keeps the
signature from meaning anything else to any other verifier. An empty policy trusts nothing:
built-in models need no trust, bundles are refused until the operator names them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import coincurve
from eth_account import Account
from eth_account.messages import encode_defunct

from fedrelay.protocol.hashing import keccak256
from fedrelay.training.errors import TrainingError

__all__ = [
    "TrustFileError",
    "TrustPolicy",
    "UntrustedBundle",
    "bundle_signer",
    "read_trust_file",
    "sign_bundle",
    "signer_address",
    "split_entries",
]

_DOMAIN = "fedrelay-model-bundle/1"
_HASH = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"(?:0x)?[0-9a-fA-F]{130}")


class UntrustedBundle(TrainingError):
    """A bundle is not on this machine's allowlist; nothing of it was fetched or imported.

    A :class:`~fedrelay.training.errors.TrainingError`: the job's model cannot be built here."""

    def __init__(self, bundle: str, signer: str | None) -> None:
        """Build the refusal of ``bundle`` (signed by ``signer``, if any) with what to trust."""
        self.bundle = bundle
        self.signer = signer
        ways = (
            f"--trust-model {bundle}, or add the line '{bundle}' to the trust file (--trust-file)"
        )
        if signer is not None:
            ways += f", or trust its signer with the line 'signer {signer}'"
        super().__init__(
            f"model bundle {bundle} is not trusted on this machine, so it was not loaded: "
            "loading a bundle runs the job poster's Python code here, with this process's "
            "access to its files, keys and network. If you have reviewed the code or trust "
            f"whoever wrote it, trust it with {ways}"
        )


class TrustFileError(ValueError):
    """A trust file or a trust option cannot be read; the message names the file, line and entry."""


def signer_address(key: str) -> str:
    """The Ethereum address (``0x`` + 40 lowercase hex) an allowlisted signer entry stands for.

    Args:
        key: An address (``0x`` + 40 hex) or a secp256k1 public key in hex (33 bytes
            compressed, 65 bytes with the ``04`` prefix, or 64 bytes without it).

    Raises:
        ValueError: ``key`` is neither.
    """
    text = key.strip()
    if _ADDRESS.fullmatch(text):
        return text.lower()
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
        if len(raw) == 64:
            raw = b"\x04" + raw
        if len(raw) not in (33, 65):
            raise ValueError
        point = coincurve.PublicKey(raw).format(compressed=False)
    except ValueError:
        raise ValueError(
            f"{key!r} is not a signer: give an Ethereum address (0x + 40 hex digits) or a "
            "secp256k1 public key in hex (33 or 65 bytes)"
        ) from None
    return "0x" + keccak256(point[1:])[-20:].hex()


def _message(bundle: str) -> bytes:
    return f"{_DOMAIN}\n{bundle}".encode()


def sign_bundle(bundle: str, private_key: str | bytes) -> str:
    """The poster's signature over bundle ``bundle``: 65 bytes (r || s || v) as lowercase hex.

    Args:
        bundle: The bundle's hash (64 lowercase hex).
        private_key: The poster's EVM key.
    """
    signed = Account.sign_message(encode_defunct(_message(bundle)), private_key)
    return bytes(signed.signature).hex()


def bundle_signer(bundle: str, signature: str) -> str | None:
    """The address (lowercase) that signed ``bundle``, or None (no or malformed signature)."""
    text = signature.strip()
    if not _SIGNATURE.fullmatch(text):
        return None
    try:
        address = Account.recover_message(
            encode_defunct(_message(bundle)), signature=bytes.fromhex(text.removeprefix("0x"))
        )
    except ValueError:
        return None
    return str(address).lower()


def split_entries(values: Iterable[str]) -> list[str]:
    """Option or variable values split at commas and white space (empty parts dropped)."""
    return [part for value in values for part in re.split(r"[,\s]+", value) if part]


def _bundle_entry(text: str) -> str | None:
    match = _HASH.fullmatch(text.strip())
    return match.group(1).lower() if match else None


@dataclass(frozen=True)
class TrustPolicy:
    """The bundles this machine runs: by hash, and by the address that signed them.

    Attributes:
        hashes: Trusted bundle hashes (64 lowercase hex).
        signers: Trusted signers' addresses (``0x`` + 40 lowercase hex).
    """

    hashes: frozenset[str] = frozenset()
    signers: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        models: Iterable[str] = (),
        signers: Iterable[str] = (),
        files: Iterable[Path] = (),
    ) -> TrustPolicy:
        """The policy of ``--trust-model`` values, ``--trust-signer`` keys and trust files.

        Raises:
            TrustFileError: A value is not a hash or a signer, or a file is unreadable or has a
                line that is neither (the message names the file and line).
        """
        hashes: set[str] = set()
        addresses: set[str] = set()
        for model in models:
            entry = _bundle_entry(model)
            if entry is None:
                raise TrustFileError(
                    f"trusted model {model!r} (--trust-model, FEDRELAY_TRUST_MODELS): not a "
                    "bundle hash (64 hex digits, as `fedrelay job post --model-bundle` prints it)"
                )
            hashes.add(entry)
        for signer in signers:
            try:
                addresses.add(signer_address(signer))
            except ValueError as exc:
                raise TrustFileError(f"--trust-signer (FEDRELAY_TRUST_SIGNERS): {exc}") from None
        policy = cls(frozenset(hashes), frozenset(addresses))
        for path in files:
            policy = policy.merged(read_trust_file(path))
        return policy

    def merged(self, other: TrustPolicy) -> TrustPolicy:
        """Everything this policy or ``other`` trusts."""
        return TrustPolicy(self.hashes | other.hashes, self.signers | other.signers)

    def signer_of(self, bundle: str, signature: str) -> str | None:
        """The address that signed ``bundle`` (None when unsigned or malformed)."""
        return bundle_signer(bundle, signature) if signature else None

    def allows(self, bundle: str, signature: str = "") -> bool:
        """Whether ``bundle`` (with the poster's ``signature``, if any) may be loaded here."""
        if bundle in self.hashes:
            return True
        signer = self.signer_of(bundle, signature)
        return signer is not None and signer in self.signers

    def require(self, bundle: str, signature: str = "") -> None:
        """Refuse ``bundle`` unless :meth:`allows` it.

        Raises:
            UntrustedBundle: It is not trusted; the message says what to trust and why.
        """
        if not self.allows(bundle, signature):
            raise UntrustedBundle(bundle, self.signer_of(bundle, signature))


def read_trust_file(path: Path) -> TrustPolicy:
    """The policy in trust file ``path`` (format in this module's docstring).

    Raises:
        TrustFileError: The file is unreadable, or a line is neither a hash nor ``signer KEY``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise TrustFileError(f"cannot read trust file {path}: {reason}") from None
    hashes: set[str] = set()
    signers: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        word, _, rest = entry.partition(" ")
        if word == "signer" and rest.strip():
            try:
                signers.add(signer_address(rest.strip()))
            except ValueError as exc:
                raise TrustFileError(f"{path} line {number}: {exc}") from None
            continue
        bundle = _bundle_entry(entry)
        if bundle is None:
            raise TrustFileError(
                f"{path} line {number}: expected a bundle hash (64 hex digits) or "
                f"'signer <address or public key>', got {entry[:80]!r}"
            )
        hashes.add(bundle)
    return TrustPolicy(frozenset(hashes), frozenset(signers))
