"""sbflink: the project's linker from clang BPF objects to Solana SBPFv0 programs."""

from sbflink.elf import ElfFormatError
from sbflink.link import KNOWN_SYSCALLS, LinkedProgram, LinkError, link_objects

__all__ = ["KNOWN_SYSCALLS", "ElfFormatError", "LinkError", "LinkedProgram", "link_objects"]
