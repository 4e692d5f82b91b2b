"""ELF64 little-endian structures: just what reading a BPF object and writing an SBF program need.

Reading covers relocatable objects as clang emits them for `-target bpf`; writing is done by
`sbflink.link`, which uses the packers below. Field layouts follow the System V ABI.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
REL = struct.Struct("<QQ")
DYN = struct.Struct("<qQ")

ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_REL = 1
ET_DYN = 3
EM_BPF = 247

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_DYNAMIC = 6
SHT_NOBITS = 8
SHT_REL = 9
SHT_DYNSYM = 11

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2
STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3

PT_LOAD = 1
PT_DYNAMIC = 2
PF_X = 1
PF_R = 4

DT_NULL = 0
DT_STRTAB = 5
DT_SYMTAB = 6
DT_STRSZ = 10
DT_SYMENT = 11
DT_REL = 17
DT_RELSZ = 18
DT_RELENT = 19
DT_TEXTREL = 22

R_BPF_NONE = 0
R_BPF_64_64 = 1
R_BPF_64_ABS64 = 2
R_BPF_64_ABS32 = 3
R_BPF_64_NODYLD32 = 4
R_BPF_64_RELATIVE = 8
R_BPF_64_32 = 10

RELOCATION_NAMES = {
    R_BPF_NONE: "R_BPF_NONE",
    R_BPF_64_64: "R_BPF_64_64",
    R_BPF_64_ABS64: "R_BPF_64_ABS64",
    R_BPF_64_ABS32: "R_BPF_64_ABS32",
    R_BPF_64_NODYLD32: "R_BPF_64_NODYLD32",
    R_BPF_64_RELATIVE: "R_BPF_64_RELATIVE",
    R_BPF_64_32: "R_BPF_64_32",
}


class ElfFormatError(ValueError):
    """The input is not an ELF file this linker understands."""


@dataclass(frozen=True)
class Section:
    """One section of an input object."""

    index: int
    name: str
    type: int
    flags: int
    data: bytes
    link: int
    info: int
    align: int
    entsize: int


@dataclass(frozen=True)
class Symbol:
    """One entry of an object's `.symtab`."""

    name: str
    value: int
    size: int
    bind: int
    type: int
    shndx: int


@dataclass(frozen=True)
class Relocation:
    """One `Elf64_Rel` entry (BPF objects carry addends in the relocated bytes)."""

    offset: int
    type: int
    symbol: int


@dataclass(frozen=True)
class ObjectFile:
    """A parsed relocatable BPF object."""

    path: str
    sections: tuple[Section, ...]
    symbols: tuple[Symbol, ...]

    def relocations_for(self, section_index: int) -> list[Relocation]:
        """Relocations that apply to the section with index `section_index`."""
        found: list[Relocation] = []
        for sec in self.sections:
            if sec.type == SHT_REL and sec.info == section_index:
                for off in range(0, len(sec.data), REL.size):
                    r_offset, r_info = REL.unpack_from(sec.data, off)
                    found.append(Relocation(r_offset, r_info & 0xFFFFFFFF, r_info >> 32))
            elif sec.type == SHT_RELA and sec.info == section_index:
                raise ElfFormatError(f"{self.path}: RELA section {sec.name} is not supported")
        return found


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    if end < 0:
        raise ElfFormatError(f"unterminated string at offset {offset}")
    return table[offset:end].decode()


def read_object(data: bytes, path: str = "<object>") -> ObjectFile:
    """Parse a relocatable ELF64 BPF object.

    Args:
        data: The bytes of the `.o` file.
        path: Name used in error messages.

    Returns:
        The sections and symbols of the object.

    Raises:
        ElfFormatError: If the file is not a little-endian ELF64 relocatable BPF object.
    """
    if len(data) < EHDR.size or data[:4] != b"\x7fELF":
        raise ElfFormatError(f"{path}: not an ELF file")
    (
        ident,
        e_type,
        e_machine,
        _ver,
        _entry,
        _phoff,
        e_shoff,
        _flags,
        _eh,
        _phes,
        _phn,
        e_shentsize,
        e_shnum,
        e_shstrndx,
    ) = EHDR.unpack_from(data)
    if ident[4] != ELFCLASS64 or ident[5] != ELFDATA2LSB:
        raise ElfFormatError(f"{path}: not a little-endian ELF64 file")
    if e_machine != EM_BPF:
        raise ElfFormatError(f"{path}: machine {e_machine} is not BPF ({EM_BPF})")
    if e_type != ET_REL:
        raise ElfFormatError(f"{path}: not a relocatable object (e_type {e_type})")
    if e_shentsize != SHDR.size:
        raise ElfFormatError(f"{path}: unexpected section header size {e_shentsize}")
    raw = [SHDR.unpack_from(data, e_shoff + i * SHDR.size) for i in range(e_shnum)]
    shstr = raw[e_shstrndx]
    shstrtab = data[shstr[4] : shstr[4] + shstr[5]]
    sections = []
    for i, (name, typ, flags, _addr, off, size, link, info, align, entsize) in enumerate(raw):
        body = b"" if typ == SHT_NOBITS else data[off : off + size]
        if typ == SHT_NOBITS:
            body = bytes(size)
        sections.append(
            Section(i, _cstr(shstrtab, name), typ, flags, body, link, info, align, entsize)
        )
    symbols: list[Symbol] = []
    for sec in sections:
        if sec.type != SHT_SYMTAB:
            continue
        strtab = sections[sec.link].data
        for off in range(0, len(sec.data), SYM.size):
            st_name, st_info, _other, shndx, value, size = SYM.unpack_from(sec.data, off)
            symbols.append(
                Symbol(_cstr(strtab, st_name), value, size, st_info >> 4, st_info & 0xF, shndx)
            )
    return ObjectFile(path, tuple(sections), tuple(symbols))
