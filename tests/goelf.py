"""Read what a Go shared library (ELF, 64-bit little-endian) says about itself, without Go
installed: its exported (dynamic) symbols, its build info (Go version, module versions:
what `go version -m` prints) and, from the Go function table (`.gopclntab`, kept even in a
stripped build because the runtime needs it), the size of each Go function's parameters.

For the neonize contract test: the Go core is a binary in a wheel, and these are the
facts about it that the driver depends on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final

BUILDINFO_MAGIC: Final = b"\xff Go buildinf:"
PCLNTAB_MAGIC_GO120: Final = 0xFFFFFFF1
"""`.gopclntab` header magic of Go 1.20 and later."""
MODINFO_SENTINEL: Final = 16
"""Bytes of marker before and after the module info string (`runtime/debug`)."""
STT_FUNC: Final = 2
STB_GLOBAL: Final = 1


class NotAGoBinary(ValueError):
    """The file is not a 64-bit little-endian ELF Go binary this module can read."""


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    offset: int
    size: int
    link: int


@dataclass(frozen=True, slots=True)
class BuildInfo:
    go_version: str
    main_path: str
    deps: dict[str, str]
    """module path -> version (after any replacement)."""
    settings: dict[str, str]
    """`-buildmode`, `CGO_ENABLED`, `vcs.revision`, ..."""


class GoBinary:
    """One Go ELF binary, read once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        if self.data[:4] != b"\x7fELF" or self.data[4] != 2 or self.data[5] != 1:
            raise NotAGoBinary(f"{path} is not a 64-bit little-endian ELF file")

    # ---- ELF --------------------------------------------------------------------
    @cached_property
    def sections(self) -> dict[str, Section]:
        shoff = struct.unpack_from("<Q", self.data, 0x28)[0]
        entsize, count, names_index = struct.unpack_from("<HHH", self.data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQIIQQ", self.data, shoff + i * entsize)
               for i in range(count)]
        names_offset = raw[names_index][4]
        found: dict[str, Section] = {}
        for name_at, _type, _flags, _addr, offset, size, link, _info, _align, _es in raw:
            name = self._cstring(names_offset + name_at)
            found[name] = Section(name, offset, size, link)
        return found

    def section(self, name: str) -> bytes:
        try:
            s = self.sections[name]
        except KeyError:
            raise NotAGoBinary(f"{self.path} has no {name} section") from None
        return self.data[s.offset:s.offset + s.size]

    @cached_property
    def exported_functions(self) -> frozenset[str]:
        """Global, defined function symbols of the dynamic symbol table: what `dlsym`
        (ctypes) can find."""
        dynsym = self.sections[".dynsym"]
        strtab = self.sections[".dynstr"].offset
        names: set[str] = set()
        for at in range(dynsym.offset, dynsym.offset + dynsym.size, 24):
            name_at, info, _other, shndx, _value, _size = struct.unpack_from(
                "<IBBHQQ", self.data, at)
            if info & 0xF == STT_FUNC and info >> 4 == STB_GLOBAL and shndx != 0:
                names.add(self._cstring(strtab + name_at))
        return frozenset(names)

    def contains(self, text: str) -> bool:
        """The UTF-8 bytes of `text` occur anywhere in the file (Go string data is not
        NUL-terminated, so a substring search is the right test)."""
        return text.encode() in self.data

    # ---- Go build info -------------------------------------------------------------
    @cached_property
    def build_info(self) -> BuildInfo:
        raw = self.section(".go.buildinfo")
        if not raw.startswith(BUILDINFO_MAGIC) or not raw[15] & 2:
            raise NotAGoBinary("build info is not in the inline (Go 1.18+) format")
        version, at = _varint_string(raw, 32)
        modinfo, _ = _varint_string(raw, at)
        if len(modinfo) > 2 * MODINFO_SENTINEL:
            modinfo = modinfo[MODINFO_SENTINEL:-MODINFO_SENTINEL]
        main_path = ""
        deps: dict[str, str] = {}
        settings: dict[str, str] = {}
        for line in modinfo.decode().splitlines():
            fields = line.split("\t")
            if fields[0] == "path" and len(fields) > 1:
                main_path = fields[1]
            elif fields[0] in ("dep", "=>") and len(fields) > 2:
                path = fields[1] if fields[0] == "dep" else list(deps)[-1]
                deps[path] = fields[2]
            elif fields[0] == "build" and len(fields) > 1:
                key, _, value = fields[1].partition("=")
                settings[key] = value
        return BuildInfo(version.decode(), main_path, deps, settings)

    # ---- Go function table -----------------------------------------------------------
    @cached_property
    def go_function_args(self) -> dict[str, int]:
        """Go function name -> the size in bytes of its parameter area (`_func.args`):
        parameters laid out in order with their natural alignment, rounded up to the
        pointer size (results are not counted)."""
        table = self.sections[".gopclntab"]
        base = table.offset
        magic, _pad1, _pad2, _min_lc, ptr_size = struct.unpack_from("<IBBBB", self.data, base)
        if magic != PCLNTAB_MAGIC_GO120 or ptr_size != 8:
            raise NotAGoBinary(f"unknown .gopclntab header {magic:#x}/{ptr_size}")
        nfunc, _nfiles, _text, funcname_off, _cu, _file, _pc, pcln_off = struct.unpack_from(
            "<8Q", self.data, base + 8)
        functab = base + pcln_off
        names: dict[str, int] = {}
        for i in range(nfunc):
            _entry, func_off = struct.unpack_from("<II", self.data, functab + 8 * i)
            _entry_off, name_off, args = struct.unpack_from("<Iii", self.data,
                                                            functab + func_off)
            names[self._cstring(base + funcname_off + name_off)] = args
        return names

    def _cstring(self, at: int) -> str:
        end = self.data.index(b"\0", at)
        return self.data[at:end].decode("utf-8", "replace")


def _varint_string(raw: bytes, at: int) -> tuple[bytes, int]:
    length = shift = 0
    while True:
        byte = raw[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return raw[at:at + length], at + length


# ---- a C/Go signature's parameter area --------------------------------------------------

SIZES: Final = {"ptr": 8, "int32": 4, "int64": 8, "bool": 1}
"""Go (cgo) parameter kinds and their sizes on 64-bit platforms."""


def param_area(params: tuple[str, ...]) -> int:
    """The `_func.args` a Go function with these parameter kinds has: each aligned to its
    size, the total rounded up to 8."""
    offset = 0
    for kind in params:
        size = SIZES[kind]
        offset = (offset + size - 1) // size * size + size
    return (offset + 7) // 8 * 8
