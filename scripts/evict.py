#!/usr/bin/env python3
"""Drops files from the page cache, as a phone's kernel does to an app's files
while it is in the background: fsync (so that no page is dirty), then
posix_fadvise(POSIX_FADV_DONTNEED). Prints, per file, how much of it was
resident before and after (from fincore, when installed), and fails if more
than 5% stayed resident: a warm-from-disk run must start from disk.

Usage: evict.py FILE...
"""
import os
import subprocess
import sys


def resident(path):
    """Resident bytes of `path` in the page cache, or None without fincore."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                             capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]) if out else None
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def main(paths):
    bad = 0
    for path in paths:
        before = resident(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        after = resident(path)
        size = os.path.getsize(path)
        print(f"evict: {path}: {size} bytes, resident {before} -> {after}", file=sys.stderr)
        if after is not None and size > 0 and after > size // 20:
            print(f"evict: {path}: {after} bytes still resident", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
