#!/usr/bin/env bash
# Checks the Markdown documents (run by .ci/run; a second or so):
#   - every relative link ([text](path), [text](path#anchor), [text](#anchor),
#     [label]: path) names a file or folder of the repository, and its
#     #anchor a heading of that Markdown file, slugged as GitHub does
#     (lowercase; punctuation other than '-' and '_' dropped; spaces become
#     '-'; a repeated heading gets -1, -2, ...);
#   - every scripts/... or .ci/... path a document names exists;
#   - README.md is at most README_MAX_LINES lines (default 300).
# Links and paths inside fenced code blocks and `code spans` count for the
# path check, not for the link check. Exit 1 with one line per problem.
#
# Usage: bash scripts/check-docs.sh [REPO_DIR]
set -euo pipefail
repo=${1:-"$(dirname "${BASH_SOURCE[0]}")/.."}
cd "$repo"
README_MAX_LINES=${README_MAX_LINES:-300} python3 - <<'PY'
import os
import re
import subprocess
import sys
import unicodedata

def markdown_files():
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
            check=True, capture_output=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for root, dirs, names in os.walk("."):
            dirs[:] = [d for d in dirs if d not in (".git", "target")]
            files += [os.path.relpath(os.path.join(root, n)) for n in names if n.endswith(".md")]
    return sorted(f for f in files if os.path.isfile(f))

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^()\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
SCRIPT_PATH = re.compile(r"(?<![\w./-])((?:scripts|\.ci)/[\w.-]+(?:/[\w.-]+)*)")

def split_lines(text):
    """(line number, line, inside a fenced code block) for every line."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            yield number, line, True
        elif fence is not None:
            if m and m.group(1).startswith(fence) and not line.strip()[len(m.group(1)):].strip():
                fence = None
            yield number, line, True
        else:
            yield number, line, False

def slug(heading):
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)   # a link's text
    text = re.sub(r"<[^>]+>", "", text)                       # inline HTML
    text = text.replace("*", "").strip().lower()
    out = []
    for ch in text:
        if ch in "-_" or ch == " ":
            out.append("-" if ch == " " else ch)
        elif unicodedata.category(ch)[0] in "LNM":
            out.append(ch)
    return "".join(out)

anchor_cache = {}
def anchors(path):
    if path not in anchor_cache:
        seen, result = {}, set()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for _, line, in_code in split_lines(text):
            if in_code:
                continue
            result.update(HTML_ANCHOR.findall(line))
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
        anchor_cache[path] = result
    return anchor_cache[path]

problems = []
def problem(where, what):
    problems.append(f"{where}: {what}")

def check_link(doc, number, target):
    if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
        return   # external (http:, mailto:, ...) or empty
    path, _, anchor = target.partition("#")
    if path:
        resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path))
        if resolved.startswith(".."):
            problem(f"{doc}:{number}", f"link '{target}' leaves the repository")
            return
        if not os.path.exists(resolved):
            problem(f"{doc}:{number}", f"link '{target}': {resolved} does not exist")
            return
    else:
        resolved = doc
    if anchor:
        if not resolved.endswith(".md") or os.path.isdir(resolved):
            problem(f"{doc}:{number}", f"link '{target}': an #anchor into {resolved}, which is not a Markdown file")
        elif anchor not in anchors(resolved):
            problem(f"{doc}:{number}", f"link '{target}': no heading in {resolved} has the anchor #{anchor}")

docs = markdown_files()
for doc in docs:
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    for number, line, in_code in split_lines(text):
        for path in SCRIPT_PATH.findall(line):
            path = path.rstrip(".")
            if not os.path.exists(path):
                problem(f"{doc}:{number}", f"names {path}, which does not exist")
        if in_code:
            continue
        prose = CODE_SPAN.sub("", line)
        for _, target in INLINE_LINK.findall(prose):
            check_link(doc, number, target)
        m = REF_DEF.match(prose)
        if m:
            check_link(doc, number, m.group(1))

limit = int(os.environ["README_MAX_LINES"])
with open("README.md", encoding="utf-8") as f:
    lines = f.read().count("\n")
if lines > limit:
    problem("README.md", f"{lines} lines, more than {limit}: move detail into docs/")

if problems:
    print(f"check-docs: {len(problems)} problem(s) in {len(docs)} Markdown files:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1)
print(f"check-docs: {len(docs)} Markdown files, links, anchors and script paths fine; README.md {lines} lines")
PY
