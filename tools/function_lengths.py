"""Report functions that are too long: C++ (cpp/) over 120 lines, Python (python/metasp) over
100 lines of code.

C++ counts every line of a function's body, from its opening brace to its closing brace
(lambdas and local classes count towards the function that holds them). Python counts the
lines of a ``def`` that carry code: docstrings, comments and blank lines are not counted.
Prints the offenders and exits 1 if there are any.

Usage: python tools/function_lengths.py [--exclude NAME ...] [--cpp-max N] [--python-max N]
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPP_SUFFIXES = {".cpp", ".hpp", ".h", ".cc"}
CONTROL = re.compile(r"\b(if|for|while|switch|catch|do|else|return|sizeof|decltype)\s*$")
NAME_BEFORE_PARENS = re.compile(r"([A-Za-z_~][\w:~<>,\s]*?)\s*$")


def strip_cpp(text: str) -> str:
    """Blank out comments, string and character literals, keeping every newline."""
    out = []
    i, n = 0, len(text)
    while i < n:
        two = text[i : i + 2]
        if two == "//":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif two == "/*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text[i] in "\"'":
            quote, j = text[i], i + 1
            while j < n and text[j] != quote:
                j += 2 if text[j] == "\\" else 1
            out.append(" " * (min(j + 1, n) - i))
            i = j + 1
        elif text[i] == "#":  # preprocessor line (with its continuations)
            j = i
            while True:
                k = text.find("\n", j)
                if k < 0:
                    k = n
                    break
                if text[k - 1] != "\\":
                    break
                j = k + 1
            out.append(re.sub(r"[^\n]", " ", text[i:k]))
            i = k
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def function_name(head: str) -> str | None:
    """The name of the function whose body a brace after `head` opens, or None if it is not
    a function body (a namespace, class, enum, control statement or initializer)."""
    head = head.strip()
    if not head.endswith(")") and not re.search(
        r"\)\s*(const|noexcept|override|final|mutable|\s|->\s*[\w:<>,\s*&]+)*$", head
    ):
        return None
    # Constructor initializer list: `Name(args) : member_(x), other_(y)`.
    depth, cut = 0, None
    for k, ch in enumerate(head):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == ":" and depth == 0:
            if head[k - 1 : k + 1] != "::" and head[k : k + 2] != "::":
                cut = k
                break
    if cut is not None:
        head = head[:cut]
    # The parameter list is the last parenthesised group (attributes may come before it).
    end = head.rfind(")")
    depth, start = 0, -1
    for k in range(end, -1, -1):
        depth += {")": 1, "(": -1}.get(head[k], 0)
        if depth == 0:
            start = k
            break
    if start <= 0:
        return None
    before = head[:start].rstrip()
    if CONTROL.search(before) or before.endswith(("=", "]", ">")) and "operator" not in before:
        return None
    match = re.search(r"(operator\s*\S+|~?[A-Za-z_]\w*(::~?[A-Za-z_]\w*)*)$", before)
    return match.group(1) if match else None


def cpp_functions(path: Path):
    """Yield (name, first line, body lines) for every function defined in a C++ file."""
    text = strip_cpp(path.read_text())
    stack: list[str | None] = []  # per open brace: function name, or None
    head_start = 0
    open_line: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            in_function = any(kind is not None for kind in stack)
            name = None if in_function else function_name(text[head_start:i])
            stack.append(name)
            open_line.append(text.count("\n", 0, i) + 1)
            head_start = i + 1
        elif ch == "}":
            if not stack:
                continue
            name = stack.pop()
            first = open_line.pop()
            if name is not None:
                last = text.count("\n", 0, i) + 1
                yield name, first, last - first + 1
            head_start = i + 1
        elif ch == ";":
            head_start = i + 1


def python_code_lines(source: str) -> set[int]:
    """Lines that carry a token other than a comment, a newline or an indent."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def python_functions(path: Path):
    """Yield (name, first line, code lines) for every function in a Python file."""
    source = path.read_text()
    code = python_code_lines(source)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        lines = set(range(node.lineno, node.end_lineno + 1)) & code
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):  # the docstring
                lines -= set(range(body[0].lineno, body[0].end_lineno + 1))
        yield node.name, node.lineno, len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME",
                        help="skip functions of this name (repeatable)")
    parser.add_argument("--cpp-max", type=int, default=120)
    parser.add_argument("--python-max", type=int, default=100)
    args = parser.parse_args(argv)
    excluded = set(args.exclude)

    offenders = []
    for path in sorted((ROOT / "cpp").rglob("*")):
        if path.suffix in CPP_SUFFIXES:
            for name, line, length in cpp_functions(path):
                short = name.split("::")[-1]
                if length > args.cpp_max and name not in excluded and short not in excluded:
                    offenders.append((path, line, name, length, args.cpp_max))
    for path in sorted((ROOT / "python" / "metasp").rglob("*.py")):
        for name, line, length in python_functions(path):
            if length > args.python_max and name not in excluded:
                offenders.append((path, line, name, length, args.python_max))

    for path, line, name, length, limit in offenders:
        print(f"{path.relative_to(ROOT)}:{line}: {name}: {length} lines (limit {limit})")
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
