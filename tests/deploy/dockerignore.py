"""Docker's .dockerignore rules, to compute a build context in the tests (no Docker needed).

As moby's patternmatcher (used by `docker build` / BuildKit): each line is a pattern, `#` lines
and blank lines are skipped, a leading `!` makes an exception, leading and trailing `/` are
dropped and the pattern is cleaned (`filepath.Clean`); `*` matches any run of non-separator
characters, `?` one, `**` any number of directories; a path is excluded when the LAST pattern
that matches it or one of its parent folders is not an exception.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path


def patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """(exception, regex) per line of a .dockerignore."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        line = posixpath.normpath(line.strip("/")) if line.strip("/") else "."
        found.append((exception, re.compile(_regex(line))))
    return found


def _regex(pattern: str) -> str:
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/": zero or more folders
                out += "(.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":  # a character class, as filepath.Match
            j = pattern.index("]", i)
            out += "[" + pattern[i + 1:j].replace("!", "^", 1) + "]"
            i = j
        elif c == "\\":
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return out + "$"


def excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether the context path (relative, '/'-separated) is left out of the build context
    (patternmatcher.MatchesOrParentMatches: each pattern is tried on the path and its parents)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    matched = False
    for exception, regex in rules:
        if exception != matched:  # an exception only matters once excluded, and the reverse
            continue
        if any(regex.match(c) for c in candidates):
            matched = not exception
    return matched


def build_context(root: Path, dockerignore: Path | None = None) -> list[str]:
    """The files of `root` that `docker build root` sends, by the rules of its .dockerignore."""
    rules = patterns((dockerignore or root / ".dockerignore").read_text())
    sent = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            rel = Path(folder, name).relative_to(root).as_posix()
            if not excluded(rel, rules):
                sent.append(rel)
    return sorted(sent)
