#!/usr/bin/env python3
"""Checks and tools for scripts/package-mobile.sh, with no Apple or Android
tool (none runs here):

  macho ARCHIVE ARCH PLATFORM...   every member of ARCHIVE (a static library,
      thin or universal) is a 64-bit Mach-O object for ARCH (arm64, x86_64)
      whose LC_BUILD_VERSION names one of PLATFORM (ios, ios-simulator), and
      each archive has a symbol table; a universal file must hold each ARCH
      given with --arches
  fat OUT ARCH=ARCHIVE...          writes a universal (fat) static library
      from thin ones, as `lipo -create` does
  undefined ARCHIVE ALLOWED...     ARCHIVE has a symbol table, and every
      symbol its members use and none
      defines is in one of the ALLOWED lists (one symbol a line, # comments)
      or matches --also REGEX; prints what is not. A weak reference need not
      be there (the standard library looks such a function up and does
      without it when it is missing: getrandom before API level 28); those
      are listed
  plist FILE                       FILE is an XCFramework's Info.plist whose
      libraries are all there (archive, header, module map, architectures)
"""
import os
import plistlib
import re
import struct
import subprocess
import sys

CPU = {"arm64": 0x0100000C, "x86_64": 0x01000007}
SUBTYPE = {"arm64": 0, "x86_64": 3}
PLATFORM = {2: "ios", 7: "ios-simulator", 1: "macos"}
LC_BUILD_VERSION = 0x32
LC_VERSION_MIN_IPHONEOS = 0x25


def ar_members(data):
    """(name, bytes) of each member of an ar archive (GNU or BSD names)."""
    if data[:8] != b"!<arch>\n":
        raise SystemExit("not an ar archive")
    pos, out = 8, []
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip()
        size = int(header[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        if name.startswith("#1/"):  # BSD: the name follows the header
            n = int(name[3:])
            name, body = body[:n].rstrip(b"\0").decode(), body[n:]
        pos += 60 + size + (size & 1)
        if name in ("/", "//", "__.SYMDEF", "__.SYMDEF SORTED", "/SYM64/") or name.startswith("__.SYMDEF"):
            continue
        out.append((name, body))
    return out


def has_index(data):
    """Whether an ar archive starts with a symbol table (GNU `/` or `/SYM64/`,
    BSD `__.SYMDEF...`): linkers, Apple's among them, want one."""
    if data[:8] != b"!<arch>\n" or len(data) < 68:
        return False
    name = data[8:24].decode(errors="replace").strip()
    if name.startswith("#1/"):
        n = int(name[3:])
        name = data[68:68 + n].rstrip(b"\0").decode(errors="replace")
    return name in ("/", "/SYM64/") or name.startswith("__.SYMDEF")


def thin_slices(data):
    """(arch, bytes) of a universal file's slices, or [(None, data)]."""
    if data[:4] == b"\xca\xfe\xba\xbe":
        n = struct.unpack(">I", data[4:8])[0]
        out = []
        for i in range(n):
            cpu, _sub, off, size, _align = struct.unpack(">iiIII", data[8 + 20 * i:28 + 20 * i])
            arch = next((a for a, c in CPU.items() if c == cpu), hex(cpu))
            out.append((arch, data[off:off + size]))
        return out
    return [(None, data)]


def macho_info(obj):
    magic, cpu = struct.unpack("<Ii", obj[:8])
    if magic != 0xFEEDFACF:
        return None, None
    ncmds = struct.unpack("<I", obj[16:20])[0]
    pos, platform = 32, None
    for _ in range(ncmds):
        cmd, size = struct.unpack("<II", obj[pos:pos + 8])
        if cmd == LC_BUILD_VERSION:
            platform = PLATFORM.get(struct.unpack("<I", obj[pos + 8:pos + 12])[0], "other")
        elif cmd == LC_VERSION_MIN_IPHONEOS:
            platform = "ios"
        pos += size
    return cpu, platform


def cmd_macho(args):
    arches = None
    if "--arches" in args:
        i = args.index("--arches")
        arches = args[i + 1].split(",")
        args = args[:i] + args[i + 2:]
    path, arch, platforms = args[0], args[1], set(args[2:])
    data = open(path, "rb").read()
    slices = thin_slices(data)
    if arches is not None and sorted(a for a, _ in slices) != sorted(arches):
        raise SystemExit(f"{path}: slices {[a for a, _ in slices]}, want {arches}")
    count = 0
    for slice_arch, body in slices:
        want = slice_arch or arch
        if not has_index(body):
            raise SystemExit(f"{path}: the {want} archive has no symbol table")
        for name, obj in ar_members(body):
            cpu, platform = macho_info(obj)
            if cpu != CPU[want]:
                raise SystemExit(f"{path}: {name}: not a 64-bit Mach-O object for {want}")
            if platform not in platforms:
                raise SystemExit(f"{path}: {name}: built for {platform}, want {' or '.join(sorted(platforms))}")
            count += 1
    print(f"{path}: {count} Mach-O objects, {', '.join(a or arch for a, _ in slices)}, {'/'.join(sorted(platforms))}")


def cmd_fat(args):
    out, parts = args[0], [a.split("=", 1) for a in args[1:]]
    align = 14
    header = struct.pack(">II", 0xCAFEBABE, len(parts))
    offset, table, bodies = len(header) + 20 * len(parts), b"", []
    for arch, path in parts:
        body = open(path, "rb").read()
        offset = (offset + (1 << align) - 1) & ~((1 << align) - 1)
        table += struct.pack(">iiIII", CPU[arch], SUBTYPE[arch], offset, len(body), align)
        bodies.append((offset, body))
        offset += len(body)
    with open(out, "wb") as f:
        f.write(header + table)
        for off, body in bodies:
            f.write(b"\0" * (off - f.tell()))
            f.write(body)


def cmd_undefined(args):
    also = []
    while "--also" in args:
        i = args.index("--also")
        also.append(re.compile(args[i + 1]))
        args = args[:i] + args[i + 2:]
    path, lists = args[0], args[1:]
    with open(path, "rb") as f:
        if not has_index(f.read()):
            raise SystemExit(f"{path}: no symbol table")
    allowed = set()
    for l in lists:
        allowed |= {s.strip() for s in open(l) if s.strip() and not s.startswith("#")}
    syms = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True, check=True).stdout
    defined, used, strong = set(), set(), set()
    for line in syms.splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].endswith(":") or f[4] not in ("GLOBAL", "WEAK"):
            continue
        name = f[7].split("@")[0]
        if f[6] != "UND":
            defined.add(name)
            continue
        used.add(name)
        if f[4] == "GLOBAL":
            strong.add(name)
    absent = sorted(s for s in used - defined - allowed if not any(r.fullmatch(s) for r in also))
    missing = [s for s in absent if s in strong]
    if missing:
        print(f"{path}: {len(missing)} undefined symbols not available: {' '.join(missing)}")
        sys.exit(1)
    weak = [s for s in absent if s not in strong]
    note = f"; weak, used when present: {' '.join(weak)}" if weak else ""
    print(f"{path}: {len(used - defined)} undefined symbols, all available{note}")


def cmd_plist(args):
    """The XCFramework's Info.plist parses, and every library it lists is
    there: the archive, its headers with xnncache.h and a module map, and
    exactly the architectures it names (the Mach-O slices)."""
    path = args[0]
    root = os.path.dirname(path)
    with open(path, "rb") as f:
        info = plistlib.load(f)
    if info.get("CFBundlePackageType") != "XFWK" or not info.get("AvailableLibraries"):
        raise SystemExit(f"{path}: not an XCFramework's Info.plist")
    for lib in info["AvailableLibraries"]:
        where = os.path.join(root, lib["LibraryIdentifier"])
        archive = os.path.join(where, lib["LibraryPath"])
        for needed in (archive, os.path.join(where, lib["HeadersPath"], "xnncache.h"),
                       os.path.join(where, lib["HeadersPath"], "module.modulemap")):
            if not os.path.isfile(needed):
                raise SystemExit(f"{path}: {lib['LibraryIdentifier']}: {needed} is missing")
        with open(archive, "rb") as f:
            slices = thin_slices(f.read())
        arches = sorted(a for a, _ in slices) if slices[0][0] else sorted(lib["SupportedArchitectures"])
        if arches != sorted(lib["SupportedArchitectures"]):
            raise SystemExit(f"{path}: {lib['LibraryIdentifier']}: the archive holds {arches}, the plist says {lib['SupportedArchitectures']}")
    print(f"{path}: {len(info['AvailableLibraries'])} libraries, each with its archive, header and module map")


if __name__ == "__main__":
    {"macho": cmd_macho, "fat": cmd_fat, "undefined": cmd_undefined, "plist": cmd_plist}[sys.argv[1]](sys.argv[2:])
