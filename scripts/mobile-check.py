#!/usr/bin/env python3
"""Checks and tools for scripts/package-mobile.sh, with no Apple or Android
tool (none runs here):

  macho ARCHIVE ARCH PLATFORM...   every member of ARCHIVE (a static library,
      thin or universal) is a 64-bit Mach-O object for ARCH (arm64, x86_64)
      whose LC_BUILD_VERSION names one of PLATFORM (ios, ios-simulator);
      a universal file must hold each ARCH given with --arches
  fat OUT ARCH=ARCHIVE...          writes a universal (fat) static library
      from thin ones, as `lipo -create` does
  undefined ARCHIVE ALLOWED...     every symbol ARCHIVE's members use and none
      defines is in one of the ALLOWED lists (one symbol a line, # comments)
      or matches --also REGEX; prints what is not
  plist FILE                       FILE parses as a property list
"""
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
    allowed = set()
    for l in lists:
        allowed |= {s.strip() for s in open(l) if s.strip() and not s.startswith("#")}
    syms = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in syms.splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].endswith(":") or f[4] not in ("GLOBAL", "WEAK"):
            continue
        name = f[7].split("@")[0]
        (used if f[6] == "UND" else defined).add(name)
    missing = sorted(s for s in used - defined - allowed if not any(r.fullmatch(s) for r in also))
    if missing:
        print(f"{path}: {len(missing)} undefined symbols not available: {' '.join(missing)}")
        sys.exit(1)
    print(f"{path}: {len(used - defined)} undefined symbols, all available")


def cmd_plist(args):
    with open(args[0], "rb") as f:
        plistlib.load(f)


if __name__ == "__main__":
    {"macho": cmd_macho, "fat": cmd_fat, "undefined": cmd_undefined, "plist": cmd_plist}[sys.argv[1]](sys.argv[2:])
