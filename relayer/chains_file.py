"""The chains file: which chains the relayer talks to, and how (``FEDRELAY_CHAINS_FILE``).

The YAML the Helm chart renders (docs/operations.md, section 1)::

    chains:
      - name: "coordinator"          # what --chain names; a DNS label
        wormhole_chain_id: 2
        kind: "evm"                  # evm | solana
        rpc_url: "http://anvil-coordinator:8545"
        address: "0x5FbD..."         # JobMarket on the coordinator chain, WorkerHub elsewhere,
                                     # or the Solana worker program id
        finality: "latest"           # finalized | safe | latest | confirmed, or confirmations

The same contract address is both what the chain's watcher reads (the messages it publishes)
and where VAAs for that chain are delivered. A broken file raises :class:`ChainsFileError`
naming the file and, for each problem, the entry and field at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedrelay.relayer.errors import RelayerError

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_EVM_TAGS = ("latest", "safe", "finalized")
_SOLANA_COMMITMENTS = ("processed", "confirmed", "finalized")


class ChainsFileError(RelayerError):
    """The chains file is missing, is not YAML, or describes the chains wrongly."""


class ChainConfig(BaseModel):
    """One chain of the chains file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    wormhole_chain_id: Annotated[int, Field(ge=1, le=0xFFFF)]
    kind: Literal["evm", "solana"]
    rpc_url: str
    address: str
    finality: str | Annotated[int, Field(ge=0)] = "finalized"

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"must be a DNS label (lowercase letters, digits, '-'), got {value!r}")
        return value

    @field_validator("rpc_url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")  # the value may be a key
        return value

    @model_validator(mode="after")
    def _fits_its_kind(self) -> ChainConfig:
        _KIND_RULES[self.kind](self.address, self.finality)
        return self


def _evm_rules(address: str, finality: str | int) -> None:
    if not _EVM_ADDRESS.match(address):
        raise ValueError(f"address of an evm chain is 0x + 40 hex digits: {address!r}")
    if isinstance(finality, str) and finality not in _EVM_TAGS:
        raise ValueError(
            f"finality of an evm chain is one of {', '.join(_EVM_TAGS)} or a number of "
            f"confirmations, got {finality!r}"
        )


def _solana_rules(address: str, finality: str | int) -> None:
    if not _BASE58.match(address):
        raise ValueError(f"address of a solana chain is a base58 program id: {address!r}")
    if finality not in _SOLANA_COMMITMENTS:
        raise ValueError(
            f"finality of a solana chain is one of {', '.join(_SOLANA_COMMITMENTS)}, "
            f"got {finality!r}"
        )


#: What an entry of each kind must look like (its address and finality), by kind.
_KIND_RULES: dict[str, Callable[[str, str | int], None]] = {
    "evm": _evm_rules,
    "solana": _solana_rules,
}


class ChainsConfig(BaseModel):
    """Every chain the relayer knows, by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chains: Annotated[tuple[ChainConfig, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> ChainsConfig:
        names = [c.name for c in self.chains]
        ids = [c.wormhole_chain_id for c in self.chains]
        for what, repeated in (
            ("name", sorted({n for n in names if names.count(n) > 1})),
            ("wormhole_chain_id", sorted({str(i) for i in ids if ids.count(i) > 1})),
        ):
            if repeated:
                raise ValueError(
                    f"each chain needs its own {what}; repeated: {', '.join(repeated)}"
                )
        return self

    def named(self, name: str) -> ChainConfig:
        """The chain called `name`.

        Raises:
            ChainsFileError: No chain has that name (the message lists the names there are).
        """
        for chain in self.chains:
            if chain.name == name:
                return chain
        known = ", ".join(c.name for c in self.chains)
        raise ChainsFileError(f"no chain named {name!r} in the chains file (known: {known})")

    def by_wormhole_id(self, chain_id: int) -> ChainConfig | None:
        """The chain with Wormhole chain id `chain_id`, if configured."""
        return next((c for c in self.chains if c.wormhole_chain_id == chain_id), None)


def parse_chains(text: str, where: str = "chains file") -> ChainsConfig:
    """Read the chains from YAML text.

    Raises:
        ChainsFileError: The text is not YAML or not a valid chains document.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChainsFileError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ChainsFileError(f"{where} must be a mapping with a 'chains' list")
    try:
        return ChainsConfig.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        if any(len(e["loc"]) > 1 for e in errors):  # item errors also make the tuple look empty
            errors = [e for e in errors if e["type"] != "too_short"]
        problems = "; ".join(_problem(error) for error in errors)
        raise ChainsFileError(f"{where} is invalid: {problems}") from None


def load_chains(path: Path) -> ChainsConfig:
    """Read the chains file at `path`.

    Raises:
        ChainsFileError: The file cannot be read, or its content is wrong
            (see :func:`parse_chains`).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ChainsFileError(
            f"cannot read the chains file {path}: {exc.strerror or exc}"
        ) from None
    return parse_chains(text, f"chains file {path}")


def _problem(error: object) -> str:
    details = error if isinstance(error, dict) else {}
    location = "".join(
        f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
        for i, part in enumerate(details.get("loc", ()))
        if not (isinstance(part, str) and part in ("str", "int", "constrained-int"))
    )
    message = str(details.get("msg", error)).removeprefix("Value error, ")
    if location.endswith(".address") and details.get("type") == "string_type":
        message += " (quote it: YAML reads an unquoted 0x... as a number)"
    return f"{location or 'document'}: {message}"
