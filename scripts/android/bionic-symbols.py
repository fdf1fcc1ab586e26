#!/usr/bin/env python3
"""Derives, from bionic's symbol maps (libc/libc.map.txt, libm/libm.map.txt,
libdl/libdl.map.txt of the Android Open Source Project's bionic), the
symbols an app may link on each Android ABI at a minimum API level, and
writes one list per ABI, sorted, one symbol a line:
  bionic-api<LEVEL>-<abi>.txt

Usage: bionic-symbols.py BIONIC_CHECKOUT LEVEL OUTDIR [SOURCE_NOTE]

The lists are committed (scripts/android/); CI reads them and never fetches
bionic. Rules, as the map files' comments use them:
- blocks LIBC_PRIVATE, *_PLATFORM and *_DEPRECATED, and symbols tagged
  platform-only, apex, llndk or systemapi, are not for apps;
- an architecture tag (arm, arm64, x86, x86_64, riscv64) on a block or a
  symbol limits it to those architectures;
- introduced=N and introduced-<arch>=N (on the block, or the symbol) give the
  first API level; the later of the two counts. A versioned block without a
  level of its own (LIBC_O, ...) counts from its release's level.
"""
import re
import subprocess
import sys
from pathlib import Path

ABIS = {"arm64-v8a": "arm64", "armeabi-v7a": "arm", "x86_64": "x86_64"}
ARCHES = {"arm", "arm64", "x86", "x86_64", "riscv64"}
NOT_FOR_APPS = {"platform-only", "apex", "llndk", "systemapi"}
BLOCK_LEVEL = {"N": 24, "O": 26, "OMR1": 27, "P": 28, "Q": 29, "R": 30, "S": 31, "T": 33, "U": 34, "V": 35}


def tags(comment):
    return comment.split() if comment else []


def level_of(tag_list, arch):
    level = 0
    for t in tag_list:
        m = re.fullmatch(r"introduced(?:-([a-z0-9_]+))?=(\d+)", t)
        if m and (m.group(1) is None or m.group(1) == arch):
            level = max(level, int(m.group(2)))
    return level


def arches_of(tag_list):
    named = {t for t in tag_list if t in ARCHES}
    return named or ARCHES


def parse(text, arch, api):
    out = set()
    block = None
    block_tags = []
    for raw in text.splitlines():
        line, _, comment = raw.partition("#")
        line = line.strip()
        t = tags(comment)
        m = re.match(r"^([A-Z0-9_]+)\s*\{", line)
        if m:
            block = m.group(1)
            block_tags = t
            continue
        if line.startswith("}"):
            block = None
            continue
        if block is None or line in ("global:", "local:", "*;") or not line.endswith(";"):
            continue
        if block.endswith("_PRIVATE") or block.endswith("_PLATFORM") or block.endswith("_DEPRECATED"):
            continue
        if NOT_FOR_APPS & set(t + block_tags):
            continue
        if arch not in arches_of(block_tags) or arch not in arches_of(t):
            continue
        level = max(level_of(block_tags, arch), level_of(t, arch))
        if not level_of(block_tags, arch):
            release = block.split("_", 1)[1] if "_" in block else ""
            level = max(level, BLOCK_LEVEL.get(release, 0))
        if level <= api:
            out.add(line[:-1].strip())
    return out


def main():
    repo, api, outdir = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    note = sys.argv[4] if len(sys.argv) > 4 else str(repo)
    maps = {}
    for lib, path in (("libc", "libc/libc.map.txt"), ("libm", "libm/libm.map.txt"), ("libdl", "libdl/libdl.map.txt")):
        git = subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{path}"], capture_output=True, text=True)
        maps[lib] = git.stdout if git.returncode == 0 else (repo / path).read_text()
    outdir.mkdir(parents=True, exist_ok=True)
    for abi, arch in ABIS.items():
        symbols = set()
        for text in maps.values():
            symbols |= parse(text, arch, api)
        dest = outdir / f"bionic-api{api}-{abi}.txt"
        with dest.open("w") as f:
            f.write(f"# Symbols of bionic's libc, libm and libdl an app may link on {abi} at API level {api}.\n")
            f.write(f"# Derived by scripts/android/bionic-symbols.py from {note}.\n")
            for s in sorted(symbols):
                f.write(s + "\n")
        print(f"{dest}: {len(symbols)} symbols")


if __name__ == "__main__":
    main()
