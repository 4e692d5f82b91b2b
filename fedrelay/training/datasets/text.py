"""Plain-text corpora turned into token streams, with the tokenizer a text schema names.

* ``bytes``: the UTF-8 bytes themselves (ids 0..255); any text, any language.
* ``chars``: one id per character; the job's vocabulary blob is the UTF-8 text of its
  characters in id order (``vocab`` of them, none repeated).
* ``named``: a tokenizer by name. The one built in is ``longest-match``: greedy longest match
  over the vocabulary blob, a JSON list of ``vocab`` distinct token strings in id order. No
  other tokenizer library is a dependency of fedrelay, so other names are refused, saying which
  ones there are.

A character the vocabulary cannot encode is refused with its file, line and column: a worker
must not train on ids it made up. A corpus is a ``.txt`` file or a folder of them (read in name
order, concatenated).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.data_spec import TextSchema
from fedrelay.protocol.hashing import keccak256
from fedrelay.training.data import TokenDataset
from fedrelay.training.datasets.schema import SchemaMismatch

__all__ = ["NAMED_TOKENIZERS", "Tokenizer", "load_corpus", "tokenizer_for"]

Tokenizer = Callable[[str, str], npt.NDArray[np.int64]]
"""Encodes ``(text, where)`` into ids; ``where`` names the text in a refusal."""

#: The named tokenizers fedrelay has built in.
NAMED_TOKENIZERS = ("longest-match",)


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def _unknown(where: str, text: str, index: int) -> SchemaMismatch:
    char = text[index]
    return SchemaMismatch(
        f"{where} {_position(text, index)}: character {char!r} (U+{ord(char):04X}) is not in "
        "the job's vocabulary"
    )


def _bytes_tokenizer(text: str, where: str) -> npt.NDArray[np.int64]:
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)


def _chars_tokenizer(vocabulary: str) -> Tokenizer:
    ids = {char: i for i, char in enumerate(vocabulary)}

    def encode(text: str, where: str) -> npt.NDArray[np.int64]:
        out = np.empty(len(text), dtype=np.int64)
        for i, char in enumerate(text):
            found = ids.get(char)
            if found is None:
                raise _unknown(where, text, i)
            out[i] = found
        return out

    return encode


def _longest_match_tokenizer(tokens: list[str]) -> Tokenizer:
    ids = {token: i for i, token in enumerate(tokens)}
    longest = max(len(t) for t in tokens)

    def encode(text: str, where: str) -> npt.NDArray[np.int64]:
        out: list[int] = []
        i = 0
        while i < len(text):
            for size in range(min(longest, len(text) - i), 0, -1):
                found = ids.get(text[i : i + size])
                if found is not None:
                    out.append(found)
                    i += size
                    break
            else:
                raise _unknown(where, text, i)
        return np.asarray(out, dtype=np.int64)

    return encode


def tokenizer_for(schema: TextSchema, vocabulary: bytes | None) -> Tokenizer:
    """The tokenizer ``schema`` names, built from the job's vocabulary blob.

    Args:
        schema: The job's text schema.
        vocabulary: The blob ``schema.vocabulary_hash`` names (None for ``bytes``).

    Raises:
        SchemaMismatch: The vocabulary blob is missing, does not hash to
            ``vocabulary_hash``, is malformed, or has other than ``vocab`` entries; or the
            named tokenizer is not built in.
    """
    if schema.tokenizer == "bytes":
        return _bytes_tokenizer
    if vocabulary is None:
        raise SchemaMismatch(f"the job's vocabulary blob {schema.vocabulary_hash} is missing")
    if keccak256(vocabulary).hex() != schema.vocabulary_hash:
        raise SchemaMismatch(
            f"the vocabulary blob hashes to {keccak256(vocabulary).hex()}, the job names "
            f"{schema.vocabulary_hash}"
        )
    try:
        if schema.tokenizer == "chars":
            entries: list[str] = list(vocabulary.decode())
        else:
            if schema.name not in NAMED_TOKENIZERS:
                raise SchemaMismatch(
                    f"no tokenizer named {schema.name!r} here (built in: "
                    f"{', '.join(NAMED_TOKENIZERS)})"
                )
            loaded = json.loads(vocabulary)
            if not isinstance(loaded, list) or not all(isinstance(t, str) and t for t in loaded):
                raise SchemaMismatch("the vocabulary blob is not a JSON list of token strings")
            entries = loaded
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaMismatch(f"the vocabulary blob cannot be read: {exc}") from None
    if len(entries) != schema.vocab or len(set(entries)) != len(entries):
        raise SchemaMismatch(
            f"the vocabulary blob has {len(entries)} entries ({len(set(entries))} distinct), "
            f"the job's schema says vocab {schema.vocab}"
        )
    if schema.tokenizer == "chars":
        return _chars_tokenizer("".join(entries))
    return _longest_match_tokenizer(entries)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise SchemaMismatch(f"{path}: a text corpus folder holds .txt files; none found")
        return files
    return [path]


def load_corpus(path: Path, schema: TextSchema, vocabulary: bytes | None) -> TokenDataset:
    """The token stream of the corpus at ``path`` (a ``.txt`` file or a folder of them).

    Raises:
        SchemaMismatch: A file is not UTF-8 (the byte offset is named), a character is not in
            the vocabulary, or the corpus is shorter than one window.
        OSError: A file cannot be read.
    """
    encode = tokenizer_for(schema, vocabulary)
    parts: list[npt.NDArray[np.int64]] = []
    for file in _files(path):
        raw = file.read_bytes()
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise SchemaMismatch(f"{file}: not UTF-8 text at byte {exc.start}") from None
        parts.append(encode(text, str(file)))
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if tokens.shape[0] < schema.context + 1:
        raise SchemaMismatch(
            f"{path}: {tokens.shape[0]} tokens, fewer than one window of {schema.context + 1} "
            f"(context {schema.context} + 1)"
        )
    return TokenDataset(tokens.astype(np.int64), schema.context)
