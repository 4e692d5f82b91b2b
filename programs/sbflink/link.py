"""Link relocatable BPF objects (clang `-target bpf`) into a program the Solana loader accepts.

The output follows the rules of the SBPFv0 loader (the path the runtime takes for programs with
`e_flags == 0`):

* one `.text` section and one `.rodata` section whose addresses equal their file offsets; the VM
  maps both at `0x1_0000_0000 + address`;
* calls to functions defined in the objects become pc-relative `call imm` (target = pc + 1 + imm);
* calls to syscalls keep `imm = -1` and get an `R_BPF_64_32` entry in `.rel.dyn` naming a
  `.dynsym` symbol, reached through `PT_DYNAMIC`;
* addresses of read-only data (`lddw` and pointers stored in `.rodata`) are resolved here to
  their final virtual address, so no other dynamic relocation is needed;
* no writable data: a program keeps its state in accounts, and the loader rejects `.data`/`.bss`.

Anything else is rejected with a `LinkError` that names the object, section and symbol.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from sbflink import elf

MM_PROGRAM_START = 0x1_0000_0000
INSN_SIZE = 8
CALL_IMM = 0x85
LDDW = 0x18

# Syscalls the Solana runtime registers for SBPFv0 programs (agave `programs/bpf_loader`).
KNOWN_SYSCALLS = frozenset(
    {
        "abort",
        "sol_panic_",
        "sol_log_",
        "sol_log_64_",
        "sol_log_compute_units_",
        "sol_log_pubkey",
        "sol_log_data",
        "sol_create_program_address",
        "sol_try_find_program_address",
        "sol_sha256",
        "sol_keccak256",
        "sol_blake3",
        "sol_secp256k1_recover",
        "sol_get_clock_sysvar",
        "sol_get_epoch_schedule_sysvar",
        "sol_get_rent_sysvar",
        "sol_get_fees_sysvar",
        "sol_get_epoch_rewards_sysvar",
        "sol_get_last_restart_slot",
        "sol_get_sysvar",
        "sol_memcpy_",
        "sol_memmove_",
        "sol_memcmp_",
        "sol_memset_",
        "sol_invoke_signed_c",
        "sol_invoke_signed_rust",
        "sol_set_return_data",
        "sol_get_return_data",
        "sol_get_stack_height",
        "sol_get_processed_sibling_instruction",
        "sol_remaining_compute_units",
        "sol_alloc_free_",
        "sol_curve_validate_point",
        "sol_curve_group_op",
        "sol_curve_multiscalar_mul",
        "sol_alt_bn128_group_op",
        "sol_alt_bn128_compression",
        "sol_big_mod_exp",
        "sol_poseidon",
        "sol_get_epoch_stake",
    }
)


class LinkError(Exception):
    """The objects cannot be linked into a Solana program; the message says why."""


@dataclass
class _Piece:
    """An input section placed in an output section."""

    obj: elf.ObjectFile
    section: elf.Section
    out: str  # ".text" or ".rodata"
    offset: int = 0  # offset inside the output section


@dataclass
class _Layout:
    text: bytearray = field(default_factory=bytearray)
    rodata: bytearray = field(default_factory=bytearray)
    pieces: dict[tuple[int, int], _Piece] = field(default_factory=dict)  # (obj id, shndx)


@dataclass(frozen=True)
class LinkedProgram:
    """The linked shared object and facts about it that tests and tools check."""

    elf_bytes: bytes
    syscalls: tuple[str, ...]
    text_size: int
    rodata_size: int


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _classify(obj: elf.ObjectFile, sec: elf.Section) -> str | None:
    if not sec.flags & elf.SHF_ALLOC:
        return None
    if sec.flags & elf.SHF_WRITE:
        if sec.data:
            raise LinkError(
                f"{obj.path}: writable section {sec.name!r} ({len(sec.data)} bytes) is not "
                "supported: a Solana program keeps no mutable globals (declare the data "
                "`const` or keep the state in an account)"
            )
        return None
    if sec.flags & elf.SHF_EXECINSTR:
        return ".text" if sec.data else None
    if sec.type in (elf.SHT_PROGBITS, elf.SHT_NOBITS):
        return ".rodata" if sec.data else None
    return None


def _lay_out(objects: list[elf.ObjectFile]) -> _Layout:
    layout = _Layout()
    for oi, obj in enumerate(objects):
        for sec in obj.sections:
            out = _classify(obj, sec)
            if out is None:
                continue
            buf = layout.text if out == ".text" else layout.rodata
            alignment = max(sec.align, INSN_SIZE if out == ".text" else 1)
            buf.extend(bytes(_align(len(buf), alignment) - len(buf)))
            layout.pieces[(oi, sec.index)] = _Piece(obj, sec, out, len(buf))
            buf.extend(sec.data)
    if not layout.text:
        raise LinkError("no executable code in the input objects")
    return layout


@dataclass(frozen=True)
class _Target:
    out: str  # ".text", ".rodata" or "" for undefined
    offset: int  # offset inside the output section


def _global_symbols(objects: list[elf.ObjectFile], layout: _Layout) -> dict[str, _Target]:
    found: dict[str, _Target] = {}
    where: dict[str, str] = {}
    for oi, obj in enumerate(objects):
        for sym in obj.symbols:
            if sym.bind not in (elf.STB_GLOBAL, elf.STB_WEAK) or sym.shndx == elf.SHN_UNDEF:
                continue
            target = _symbol_target(oi, obj, sym, layout)
            if sym.name in found:
                raise LinkError(
                    f"symbol {sym.name!r} is defined in both {where[sym.name]} and {obj.path}"
                )
            found[sym.name] = target
            where[sym.name] = obj.path
    return found


def _symbol_target(oi: int, obj: elf.ObjectFile, sym: elf.Symbol, layout: _Layout) -> _Target:
    if sym.shndx in (elf.SHN_ABS, elf.SHN_COMMON) or sym.shndx >= 0xFF00:
        raise LinkError(f"{obj.path}: symbol {sym.name!r} has unsupported section {sym.shndx:#x}")
    piece = layout.pieces.get((oi, sym.shndx))
    if piece is None:
        name = obj.sections[sym.shndx].name
        raise LinkError(
            f"{obj.path}: symbol {sym.name!r} lives in section {name!r}, which is not part of "
            "the program (only code and read-only data are linked)"
        )
    return _Target(piece.out, piece.offset + sym.value)


def _resolve(
    oi: int, obj: elf.ObjectFile, rel: elf.Relocation, globals_: dict[str, _Target], layout: _Layout
) -> tuple[elf.Symbol, _Target]:
    sym = obj.symbols[rel.symbol]
    if sym.shndx == elf.SHN_UNDEF:
        return sym, globals_.get(sym.name, _Target("", 0))
    if sym.bind in (elf.STB_GLOBAL, elf.STB_WEAK):
        return sym, globals_[sym.name]
    return sym, _symbol_target(oi, obj, sym, layout)


@dataclass
class _Dynamic:
    names: list[str] = field(default_factory=list)
    relocs: list[tuple[int, int]] = field(default_factory=list)  # (text offset, symbol name index)

    def syscall(self, name: str, text_offset: int) -> None:
        if name not in self.names:
            self.names.append(name)
        self.relocs.append((text_offset, self.names.index(name)))


def _relocate(objects: list[elf.ObjectFile], layout: _Layout, rodata_addr: int) -> _Dynamic:
    globals_ = _global_symbols(objects, layout)
    dynamic = _Dynamic()
    for (oi, shndx), piece in sorted(layout.pieces.items(), key=lambda kv: kv[0]):
        obj = piece.obj
        buf = layout.text if piece.out == ".text" else layout.rodata
        for rel in obj.relocations_for(shndx):
            at = piece.offset + rel.offset
            sym, target = _resolve(oi, obj, rel, globals_, layout)
            where = f"{obj.path}: {piece.section.name}+{rel.offset:#x}"
            kind = elf.RELOCATION_NAMES.get(rel.type, f"type {rel.type}")
            if piece.out == ".text" and rel.type == elf.R_BPF_64_32:
                _relocate_call(buf, at, sym, target, dynamic, where)
            elif piece.out == ".text" and rel.type == elf.R_BPF_64_64:
                if buf[at] != LDDW:
                    raise LinkError(f"{where}: R_BPF_64_64 on an instruction that is not `lddw`")
                addend = struct.unpack_from("<I", buf, at + 4)[0]
                address = _data_address(sym, target, addend, where, rodata_addr)
                struct.pack_into("<I", buf, at + 4, address & 0xFFFFFFFF)
                struct.pack_into("<I", buf, at + 12, address >> 32)
            elif piece.out == ".rodata" and rel.type == elf.R_BPF_64_ABS64:
                addend = struct.unpack_from("<Q", buf, at)[0]
                address = _data_address(sym, target, addend, where, rodata_addr)
                struct.pack_into("<Q", buf, at, address)
            else:
                raise LinkError(f"{where}: unsupported relocation {kind} against {sym.name!r}")
    return dynamic


def _relocate_call(
    text: bytearray, at: int, sym: elf.Symbol, target: _Target, dynamic: _Dynamic, where: str
) -> None:
    if text[at] != CALL_IMM:
        raise LinkError(f"{where}: R_BPF_64_32 on an instruction that is not `call`")
    if target.out == "":
        if sym.name not in KNOWN_SYSCALLS:
            raise LinkError(f"{where}: undefined symbol {sym.name!r} (not a Solana syscall)")
        struct.pack_into("<i", text, at + 4, -1)
        dynamic.syscall(sym.name, at)
        return
    if sym.type == elf.STT_SECTION:
        raise LinkError(f"{where}: call through a section symbol is not supported")
    if target.out != ".text":
        raise LinkError(f"{where}: call to {sym.name!r}, which is data, not a function")
    imm = target.offset // INSN_SIZE - (at // INSN_SIZE + 1)
    struct.pack_into("<i", text, at + 4, imm)


def _data_address(
    sym: elf.Symbol, target: _Target, addend: int, where: str, rodata_addr: int
) -> int:
    if target.out == "":
        raise LinkError(f"{where}: undefined symbol {sym.name!r}")
    if target.out == ".text":
        raise LinkError(
            f"{where}: address of function {sym.name!r} taken; function pointers are not supported"
        )
    return MM_PROGRAM_START + rodata_addr + target.offset + addend


class _Strings:
    """A string table under construction."""

    def __init__(self) -> None:
        self.data = bytearray(b"\0")

    def add(self, name: str) -> int:
        offset = len(self.data)
        self.data.extend(name.encode() + b"\0")
        return offset


def link_objects(objects: list[bytes], names: list[str] | None = None) -> LinkedProgram:
    """Link BPF relocatable objects into a Solana program (an SBPFv0 shared object).

    Args:
        objects: The contents of the `.o` files, as emitted by `clang -target bpf -c`.
        names: File names for error messages, parallel to `objects`.

    Returns:
        The program's ELF bytes with facts about its layout.

    Raises:
        LinkError: If the objects use something the Solana loader cannot run (writable data,
            unknown relocations, undefined symbols that are not syscalls, no `entrypoint`).
        elf.ElfFormatError: If an input is not a BPF relocatable object.
    """
    labels = names or [f"object{i}" for i in range(len(objects))]
    parsed = [elf.read_object(data, label) for data, label in zip(objects, labels, strict=True)]
    layout = _lay_out(parsed)

    phnum = 4
    text_addr = _align(elf.EHDR.size + phnum * elf.PHDR.size, INSN_SIZE)
    rodata_addr = _align(text_addr + len(layout.text), 8)
    dynamic = _relocate(parsed, layout, rodata_addr)
    entry = _global_symbols(parsed, layout).get("entrypoint")
    if entry is None or entry.out != ".text":
        raise LinkError("no function named `entrypoint` in the input objects")

    dynstr = _Strings()
    name_offsets = [dynstr.add(n) for n in dynamic.names]
    dynsym = bytearray(elf.SYM.size)
    for off in name_offsets:
        info = (elf.STB_GLOBAL << 4) | elf.STT_NOTYPE
        dynsym.extend(elf.SYM.pack(off, info, 0, elf.SHN_UNDEF, 0, 0))
    rel_dyn = bytearray()
    for text_offset, sym_index in dynamic.relocs:
        r_info = ((sym_index + 1) << 32) | elf.R_BPF_64_32
        rel_dyn.extend(elf.REL.pack(text_addr + text_offset, r_info))

    dynamic_addr = _align(rodata_addr + len(layout.rodata), 8)
    dyn_entries = 6 + (4 if rel_dyn else 0)
    dynsym_addr = dynamic_addr + dyn_entries * elf.DYN.size
    dynstr_addr = dynsym_addr + len(dynsym)
    rel_addr = _align(dynstr_addr + len(dynstr.data), 8)
    tags = [
        (elf.DT_SYMTAB, dynsym_addr),
        (elf.DT_STRTAB, dynstr_addr),
        (elf.DT_STRSZ, len(dynstr.data)),
        (elf.DT_SYMENT, elf.SYM.size),
    ]
    if rel_dyn:
        tags += [
            (elf.DT_REL, rel_addr),
            (elf.DT_RELSZ, len(rel_dyn)),
            (elf.DT_RELENT, elf.REL.size),
            (elf.DT_TEXTREL, 0),
        ]
    tags += [(elf.DT_NULL, 0)] * (dyn_entries - len(tags))
    dynamic_table = b"".join(elf.DYN.pack(tag, value) for tag, value in tags)

    shstr = _Strings()
    sh_names = {
        n: shstr.add(n)
        for n in (".text", ".rodata", ".dynamic", ".dynsym", ".dynstr", ".rel.dyn", ".shstrtab")
    }
    shstrtab_addr = rel_addr + len(rel_dyn)
    shoff = _align(shstrtab_addr + len(shstr.data), 8)

    out = bytearray(shoff)
    out[text_addr : text_addr + len(layout.text)] = layout.text
    out[rodata_addr : rodata_addr + len(layout.rodata)] = layout.rodata
    out[dynamic_addr : dynamic_addr + len(dynamic_table)] = dynamic_table
    out[dynsym_addr : dynsym_addr + len(dynsym)] = dynsym
    out[dynstr_addr : dynstr_addr + len(dynstr.data)] = dynstr.data
    out[rel_addr : rel_addr + len(rel_dyn)] = rel_dyn
    out[shstrtab_addr : shstrtab_addr + len(shstr.data)] = shstr.data

    dyn_end = rel_addr + len(rel_dyn)
    phdrs = [
        (elf.PT_LOAD, elf.PF_R | elf.PF_X, text_addr, len(layout.text)),
        (elf.PT_LOAD, elf.PF_R, rodata_addr, len(layout.rodata)),
        (elf.PT_LOAD, elf.PF_R, dynamic_addr, dyn_end - dynamic_addr),
        (elf.PT_DYNAMIC, elf.PF_R, dynamic_addr, len(dynamic_table)),
    ]
    for i, (ptype, flags, addr, size) in enumerate(phdrs):
        elf.PHDR.pack_into(
            out, elf.EHDR.size + i * elf.PHDR.size, ptype, flags, addr, addr, addr, size, size, 8
        )
    sections = [
        (0, elf.SHT_NULL, 0, 0, 0, 0, 0, 0, 0),
        (
            sh_names[".text"],
            elf.SHT_PROGBITS,
            elf.SHF_ALLOC | elf.SHF_EXECINSTR,
            text_addr,
            len(layout.text),
            0,
            0,
            8,
            0,
        ),
        (
            sh_names[".rodata"],
            elf.SHT_PROGBITS,
            elf.SHF_ALLOC,
            rodata_addr,
            len(layout.rodata),
            0,
            0,
            8,
            0,
        ),
        (
            sh_names[".dynamic"],
            elf.SHT_DYNAMIC,
            elf.SHF_ALLOC,
            dynamic_addr,
            len(dynamic_table),
            5,
            0,
            8,
            elf.DYN.size,
        ),
        (
            sh_names[".dynsym"],
            elf.SHT_DYNSYM,
            elf.SHF_ALLOC,
            dynsym_addr,
            len(dynsym),
            5,
            1,
            8,
            elf.SYM.size,
        ),
        (
            sh_names[".dynstr"],
            elf.SHT_STRTAB,
            elf.SHF_ALLOC,
            dynstr_addr,
            len(dynstr.data),
            0,
            0,
            1,
            0,
        ),
        (
            sh_names[".rel.dyn"],
            elf.SHT_REL,
            elf.SHF_ALLOC,
            rel_addr,
            len(rel_dyn),
            4,
            0,
            8,
            elf.REL.size,
        ),
        (sh_names[".shstrtab"], elf.SHT_STRTAB, 0, 0, len(shstr.data), 0, 0, 1, 0),
    ]
    for name, typ, flags, addr, size, link, info, align, entsize in sections:
        offset = addr if name != sh_names[".shstrtab"] else shstrtab_addr
        if typ == elf.SHT_NULL:
            offset = 0
        out.extend(elf.SHDR.pack(name, typ, flags, addr, offset, size, link, info, align, entsize))
    ident = b"\x7fELF" + bytes([elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EV_CURRENT, 0]) + bytes(8)
    elf.EHDR.pack_into(
        out,
        0,
        ident,
        elf.ET_DYN,
        elf.EM_BPF,
        elf.EV_CURRENT,
        text_addr + entry.offset,
        elf.EHDR.size,
        shoff,
        0,
        elf.EHDR.size,
        elf.PHDR.size,
        len(phdrs),
        elf.SHDR.size,
        len(sections),
        len(sections) - 1,
    )
    return LinkedProgram(bytes(out), tuple(dynamic.names), len(layout.text), len(layout.rodata))
