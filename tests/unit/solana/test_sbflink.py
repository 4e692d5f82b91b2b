"""The project's BPF-to-Solana linker: output structure, relocations, errors, and LiteSVM runs."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "programs"))

from sbflink import ElfFormatError, LinkError, link_objects  # type: ignore[import-not-found]
from sbflink import elf as E
from sbflink.link import MM_PROGRAM_START  # type: ignore[import-not-found]

CLANG = shutil.which("clang-14") or shutil.which("clang")
FLAGS = ["-target", "bpf", "-O2", "-mcpu=v2", "-ffreestanding", "-fno-builtin", "-c"]

Compile = Callable[..., bytes]

PRELUDE = """
typedef unsigned long u64;
typedef unsigned char u8;
void sol_log_(const char *, u64);
void sol_log_64_(u64, u64, u64, u64, u64);
"""

MAIN = (
    PRELUDE
    + """
u64 triple(u64 x);
static const char *const WORDS[] = {"zero", "one", "two"};
static __attribute__((noinline)) u64 length_of(const char *s) {
  u64 n = 0;
  while (s[n]) n++;
  return n;
}
u64 entrypoint(const u8 *input) {
  u64 accounts = *(const u64 *)input;             /* 0 accounts: data length follows */
  u64 data_len = *(const u64 *)(input + 8);
  u8 which = data_len ? input[16] : 0;
  const char *word = WORDS[which % 3];
  sol_log_(word, length_of(word));
  sol_log_64_(triple(which), accounts, 0, 0, 0);
  return which == 2 ? 0x1234 : 0;
}
"""
)

HELPER = (
    PRELUDE
    + """
u64 triple(u64 x) { return x * 3; }
"""
)


@pytest.fixture
def compile_c(tmp_path: Path) -> Compile:
    """Compile C source for BPF and return the object bytes."""
    if CLANG is None:
        pytest.fail("clang-14 is required to test the linker (apt-get install clang-14)")

    def run(source: str, name: str = "prog", target: list[str] | None = None) -> bytes:
        src = tmp_path / f"{name}.c"
        obj = tmp_path / f"{name}.o"
        src.write_text(source)
        flags = target if target is not None else FLAGS
        subprocess.run([CLANG, *flags, str(src), "-o", str(obj)], check=True, capture_output=True)
        return obj.read_bytes()

    return run


def _sections(image: bytes) -> dict[str, tuple[int, int, int, int]]:
    """name -> (type, addr, offset, size) of the linked image."""
    header = E.EHDR.unpack_from(image)
    shoff, shnum, shstrndx = header[6], header[12], header[13]
    raw = [E.SHDR.unpack_from(image, shoff + i * E.SHDR.size) for i in range(shnum)]
    names_at = raw[shstrndx][4]
    out = {}
    for name, typ, _flags, addr, offset, size, *_ in raw[1:]:
        end = image.index(b"\0", names_at + name)
        out[image[names_at + name : end].decode()] = (typ, addr, offset, size)
    return out


def _run(image: bytes, data: bytes) -> TransactionMetadata | FailedTransactionMetadata:
    svm = LiteSVM()
    program = Pubkey.new_unique()
    svm.add_program(program, image)
    payer = Keypair()
    svm.airdrop(payer.pubkey(), 10**9)
    tx = Transaction.new_signed_with_payer(
        [Instruction(program, data, [])], payer.pubkey(), [payer], svm.latest_blockhash()
    )
    return svm.send_transaction(tx)


def test_output_has_the_layout_the_loader_requires(compile_c: Compile) -> None:
    linked = link_objects([compile_c(MAIN), compile_c(HELPER, "helper")])
    image = linked.elf_bytes
    ident, e_type, machine, _v, entry, *_ = E.EHDR.unpack_from(image)
    assert ident[:4] == b"\x7fELF"
    assert ident[4] == E.ELFCLASS64
    assert ident[7] == 0
    assert (e_type, machine) == (E.ET_DYN, E.EM_BPF)
    sections = _sections(image)
    assert list(sections) == [
        ".text",
        ".rodata",
        ".dynamic",
        ".dynsym",
        ".dynstr",
        ".rel.dyn",
        ".shstrtab",
    ]
    for name in (".text", ".rodata"):
        _typ, addr, offset, _size = sections[name]
        assert addr == offset
    text = sections[".text"]
    assert text[1] <= entry < text[1] + text[3]
    offsets = [s[2] for s in sections.values()]
    assert offsets == sorted(offsets)
    assert set(linked.syscalls) == {"sol_log_", "sol_log_64_"}


def test_syscalls_get_dynamic_relocations_and_calls_become_pc_relative(compile_c: Compile) -> None:
    image = link_objects([compile_c(MAIN), compile_c(HELPER, "helper")]).elf_bytes
    sections = _sections(image)
    _t, text_addr, _o, text_size = sections[".text"]
    _t, rel_addr, _o, rel_size = sections[".rel.dyn"]
    relocated = set()
    for at in range(rel_addr, rel_addr + rel_size, E.REL.size):
        offset, info = E.REL.unpack_from(image, at)
        assert info & 0xFFFFFFFF == E.R_BPF_64_32
        assert image[offset] == 0x85
        assert struct.unpack_from("<i", image, offset + 4)[0] == -1
        relocated.add(offset)
    count = text_size // 8
    for pc in range(count):
        at = text_addr + 8 * pc
        if image[at] == 0x85 and at not in relocated:
            target = pc + 1 + struct.unpack_from("<i", image, at + 4)[0]
            assert 0 <= target < count  # a local or cross-object call, resolved here


def test_read_only_data_addresses_are_resolved(compile_c: Compile) -> None:
    image = link_objects([compile_c(MAIN), compile_c(HELPER, "helper")]).elf_bytes
    sections = _sections(image)
    _t, ro_addr, _o, ro_size = sections[".rodata"]
    _t, text_addr, _o, text_size = sections[".text"]
    low, high = MM_PROGRAM_START + ro_addr, MM_PROGRAM_START + ro_addr + ro_size
    lddw = [
        struct.unpack_from("<I", image, at + 4)[0]
        | struct.unpack_from("<I", image, at + 12)[0] << 32
        for at in range(text_addr, text_addr + text_size, 8)
        if image[at] == 0x18
    ]
    assert lddw
    assert all(low <= value < high for value in lddw)
    pointers = [struct.unpack_from("<Q", image, ro_addr + 8 * i)[0] for i in range(3)]
    assert all(low <= p < high for p in pointers)  # the WORDS table


def test_linked_program_runs_in_litesvm(compile_c: Compile) -> None:
    image = link_objects([compile_c(MAIN), compile_c(HELPER, "helper")]).elf_bytes
    result = _run(image, bytes([1]))
    assert isinstance(result, TransactionMetadata), result
    logs = list(result.logs())
    assert "Program log: one" in logs
    assert "Program log: 0x3, 0x0, 0x0, 0x0, 0x0" in logs

    failed = _run(image, bytes([2]))
    assert isinstance(failed, FailedTransactionMetadata)
    assert "custom program error: 0x1234" in "\n".join(failed.meta().logs())


@pytest.mark.parametrize("initial", ["5", "0"], ids=["data", "bss"])
def test_writable_data_is_rejected(compile_c: Compile, initial: str) -> None:
    source = (
        PRELUDE + f"u64 counter = {initial}; u64 entrypoint(const u8 *i) {{ return counter++; }}"
    )
    with pytest.raises(LinkError, match="writable section"):
        link_objects([compile_c(source)])


def test_undefined_symbol_that_is_not_a_syscall_is_rejected(compile_c: Compile) -> None:
    source = PRELUDE + "u64 missing(u64); u64 entrypoint(const u8 *i) { return missing(*i); }"
    with pytest.raises(LinkError, match=r"'missing' \(not a Solana syscall\)"):
        link_objects([compile_c(source)])


def test_function_pointers_are_rejected(compile_c: Compile) -> None:
    source = (
        PRELUDE
        + """
    u64 one(u64 x) { return x + 1; }
    u64 two(u64 x) { return x + 2; }
    typedef u64 (*op)(u64);
    static const op OPS[] = {one, two};
    u64 entrypoint(const u8 *i) { return OPS[*i & 1](*i); }
    """
    )
    with pytest.raises(LinkError, match="function"):
        link_objects([compile_c(source)])


def test_missing_entrypoint_and_duplicate_symbols_are_rejected(compile_c: Compile) -> None:
    with pytest.raises(LinkError, match="entrypoint"):
        link_objects([compile_c(HELPER, "helper")])
    with pytest.raises(LinkError, match="defined in both"):
        link_objects([compile_c(MAIN), compile_c(HELPER, "a"), compile_c(HELPER, "b")])


def test_non_bpf_input_is_rejected(compile_c: Compile) -> None:
    host_object = compile_c("int f(void) { return 1; }", "host", ["-O2", "-c"])
    with pytest.raises(ElfFormatError, match="not BPF"):
        link_objects([host_object], ["host.o"])
    with pytest.raises(ElfFormatError, match="not an ELF"):
        link_objects([b"not an object"])
