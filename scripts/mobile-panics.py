#!/usr/bin/env python3
"""Where the app build of xnncache can panic, and so abort.

Reads a linked program (scripts/footprint.sh links tests/c/footprint with
the app build of libxnncache.a and keeps an unstripped copy) with objdump,
and counts, in every function, the calls and jumps to the standard library's
panic entry points (core::panicking, unwrap_failed, slice_index_fail,
capacity_overflow, ...). Each such place is a panic site: the panic machinery
itself is not listed (it only runs once a site was reached).

  list PROGRAM          prints "count<TAB>function", one line per function
  check PROGRAM LIST    LIST (scripts/mobile/panic-sites.txt) must name the
                        same functions with the same counts, each with a
                        reason; prints the differences and fails on any
  update PROGRAM LIST   rewrites LIST from PROGRAM, keeping the reasons of
                        functions whose counts did not change and marking the
                        others "TO REVIEW" (check then fails until a reason is
                        written)

Function names are demangled and stripped of crate hashes, so that the list
changes only when code does (or when Debian's rustc-web changes the standard
library: then review its new sites the same way).
"""
import re
import subprocess
import sys

# The panic machinery: reaching any of these is a panic. Sites are calls and
# jumps to them from functions that are not themselves in this list.
ENTRY = re.compile(
    r"^(core::panicking::|std::panicking::|<std::panicking::|__rustc::|core::option::(unwrap|expect)_failed"
    r"|core::result::unwrap_failed|core::slice::index::slice_index_fail|core::str::slice_error_fail"
    r"|core::slice::copy_from_slice_impl::len_mismatch_fail|alloc::raw_vec::(capacity_overflow|handle_error)"
    r"|core::cell::panic_already_|std::thread::local::panic_access_error|<hashbrown::raw::Fallibility>::capacity_overflow"
    r"|<alloc::vec::Vec<_, _>>::(swap_)?remove::assert_failed|<std::thread::id::ThreadId>::new::exhausted"
    r"|std::sys::backtrace::__rust_end_short_backtrace"
    r"|std::thread::current::with_current_name::<std::panicking::default_hook)"
    r"|::do_panic::runtime$"
)
LINE = re.compile(r"^\s+[0-9a-f]+:\s+(call|j[a-z]+)\s+[0-9a-f]+ <([^>]+)>")
FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")


def clean(name):
    name = re.sub(r"\[[0-9a-f]+\]", "", name)  # crate disambiguators
    return re.sub(r"::h[0-9a-f]{16}$", "", name)


def sites(program):
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", program],
                         capture_output=True, text=True, check=True).stdout
    counts, func = {}, None
    for line in dis.splitlines():
        m = FUNC.match(line)
        if m:
            func = clean(m.group(1))
            continue
        m = LINE.match(line)
        if not m or func is None or "+0x" in m.group(2):
            continue
        if ENTRY.search(clean(m.group(2))) and not ENTRY.search(func):
            counts[func] = counts.get(func, 0) + 1
    return counts


def read_list(path):
    entries = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not parts[0].isdigit():
                raise SystemExit(f"{path}:{number}: want count<TAB>function<TAB>reason")
            entries[parts[1]] = (int(parts[0]), parts[2])
    return entries


def main():
    cmd, program = sys.argv[1], sys.argv[2]
    found = sites(program)
    if cmd == "list":
        for f in sorted(found):
            print(f"{found[f]}\t{f}")
        return
    path = sys.argv[3]
    if cmd == "update":
        old = read_list(path)
        with open(path, encoding="utf-8") as f:
            header = [l for l in f if l.startswith("#")]
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(header)
            for fn in sorted(found):
                count, why = old.get(fn, (None, ""))
                if count != found[fn] or not why:
                    why = "TO REVIEW" + (f" (was {count}: {why})" if why else "")
                f.write(f"{found[fn]}\t{fn}\t{why}\n")
        print(f"{path}: {len(found)} functions, {sum(found.values())} sites")
        return
    listed = read_list(path)
    problems = []
    for fn in sorted(set(found) | set(listed)):
        have, (want, why) = found.get(fn, 0), listed.get(fn, (0, ""))
        if have != want:
            problems.append(f"  {fn}: {have} panic sites in the build, {want} in the list")
        elif why.startswith("TO REVIEW") or not why.strip():
            problems.append(f"  {fn}: no reason given")
    if problems:
        print(f"mobile-panics: the app build's panic sites differ from {path}:", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        print(f"Review each (why can no input reach it?), then: python3 scripts/mobile-panics.py update PROGRAM {path}"
              " and write the reasons.", file=sys.stderr)
        sys.exit(1)
    print(f"mobile-panics: {sum(found.values())} panic sites in {len(found)} functions, each with its reason in {path}")


if __name__ == "__main__":
    main()
