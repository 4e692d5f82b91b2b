"""`fedrelay vaa ...`: decode and verify Wormhole v1 VAAs from the command line."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from fedrelay.protocol.wormhole import (
    GuardianSet,
    WormholeError,
    parse_address,
    parse_vaa,
    vaa_to_json,
    verify_vaa,
)

app = typer.Typer(help="Decode and verify Wormhole v1 VAAs.", no_args_is_help=True)

HexArgument = Annotated[
    str,
    typer.Argument(
        metavar="HEX", help="The VAA as hex (0x optional, whitespace ignored), or - for stdin."
    ),
]


def _read_bytes(text: str) -> bytes:
    """Turn the HEX argument (or stdin for ``-``) into bytes, or stop with a usage error."""
    if text == "-":
        text = sys.stdin.read()
    digits = "".join(text.split())
    digits = digits[2:] if digits[:2].lower() == "0x" else digits
    if not digits:
        raise typer.BadParameter("no hex given", param_hint="HEX")
    if len(digits) % 2:
        raise typer.BadParameter(f"odd number of hex digits ({len(digits)})", param_hint="HEX")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        bad = next(c for c in digits if c not in "0123456789abcdefABCDEF")
        raise typer.BadParameter(f"not hex: found {bad!r}", param_hint="HEX") from None


def _fail(exc: WormholeError) -> typer.Exit:
    typer.echo(f"invalid: {exc.reason}: {exc}", err=True)
    return typer.Exit(code=1)


@app.command("decode")
def decode(vaa_hex: HexArgument) -> None:
    """Print every field of a VAA, its digest and its decoded payload as one JSON object."""
    try:
        vaa = parse_vaa(_read_bytes(vaa_hex))
    except WormholeError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(vaa_to_json(vaa)))


@app.command("verify")
def verify(
    vaa_hex: HexArgument,
    guardians: Annotated[
        str,
        typer.Option(help="Comma-separated guardian addresses (20-byte hex), in set order."),
    ],
    index: Annotated[int, typer.Option(help="The guardian set index of those guardians.")] = 0,
) -> None:
    """Exit 0 when the VAA carries a quorum of valid signatures of the given set, else 1."""
    try:
        addresses = tuple(parse_address(a) for a in guardians.split(",") if a.strip())
        guardian_set = GuardianSet(index=index, addresses=addresses)
    except WormholeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--guardians/--index") from None
    data = _read_bytes(vaa_hex)
    try:
        vaa = parse_vaa(data)
        verify_vaa(vaa, guardian_set, now=int(time.time()))
    except WormholeError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"valid: {len(vaa.signatures)} of {len(addresses)} guardians "
        f"(quorum {guardian_set.quorum}), digest 0x{vaa.digest.hex()}"
    )
