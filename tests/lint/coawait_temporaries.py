#!/usr/bin/python3
"""Flags conditional expressions that build a temporary inside a co_await statement.

GCC 12 (Debian 12's compiler) destroys the temporary std::string made by `c ? "literal" : str`
twice when the conditional is an argument of a co_awaited call: a relayed prefill 4xx crashed
`eldr serve` with a double free that way. Name the value first. This check covers the pattern
of that bug (a conditional with a string literal or a constructed object as an operand, inside
one co_await statement); it is a guard for code review, not a parser.

Usage: coawait_temporaries.py SRC_DIR...   (exit 1 and one line per finding)
"""
import os
import re
import sys

STATEMENT = re.compile(r"co_await\b[^;{}]*;", re.S)
RISKY = re.compile(r"\?[^;:]*(\"|std::string\(|fmt::format\()|\?[^;]*:\s*(\"|std::string\(|fmt::format\()",
                   re.S)


def strip_comments(text):
    return re.sub(r"//[^\n]*", lambda m: " " * len(m.group(0)), text)


def main(dirs):
    found = 0
    for d in dirs:
        for root, _, files in os.walk(d):
            for name in files:
                if not name.endswith((".cc", ".h")):
                    continue
                path = os.path.join(root, name)
                text = strip_comments(open(path, encoding="utf-8").read())
                for m in STATEMENT.finditer(text):
                    stmt = m.group(0)
                    # Strings inside the statement hide '?' and ':' characters.
                    bare = re.sub(r'"(\\.|[^"\\])*"', '"S"', stmt)
                    if RISKY.search(bare):
                        line = text.count("\n", 0, m.start()) + 1
                        print(f"{path}:{line}: conditional with a temporary inside co_await; "
                              "name the value first (GCC 12 double-destroys it)")
                        found += 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
