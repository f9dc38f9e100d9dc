"""Just enough of a PowerShell reader to check a script where `pwsh` cannot be installed.

`code_of` blanks out comments and string contents (keeping the quotes and the line structure), so what
remains is the script's code: brackets can be balanced, cmdlets found, and each cmdlet's `-Parameter`
names collected up to the end of its statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def code_of(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)

    def blank(segment: str) -> str:
        return "".join("\n" if ch == "\n" else " " for ch in segment)

    while i < n:
        ch = text[i]
        two = text[i:i + 2]
        if two == "<#":
            end = text.find("#>", i + 2)
            end = n if end < 0 else end + 2
            out.append(blank(text[i:end]))
            i = end
        elif ch == "#":
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(blank(text[i:end]))
            i = end
        elif two in ('@"', "@'") and text[i + 2:i + 3] == "\n":
            closing = "\n" + two[1] + "@"
            end = text.find(closing, i + 2)
            if end < 0:
                raise ValueError(f"unterminated here-string at offset {i}")
            end += len(closing)
            out.append('"' + blank(text[i + 1:end - 1]) + '"')
            i = end
        elif ch == "'":
            j = i + 1
            while j < n:
                if text[j] == "'" and text[j + 1:j + 2] == "'":
                    j += 2
                    continue
                if text[j] == "'":
                    break
                j += 1
            if j >= n:
                raise ValueError(f"unterminated single-quoted string at offset {i}")
            out.append("'" + blank(text[i + 1:j]) + "'")
            i = j + 1
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "`" else 1
            if j >= n:
                raise ValueError(f"unterminated double-quoted string at offset {i}")
            out.append('"' + blank(text[i + 1:j]) + '"')
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


PAIRS = {"(": ")", "{": "}", "[": "]"}


def unbalanced(code: str) -> str | None:
    """None when every bracket closes in order; else where it goes wrong."""
    stack: list[tuple[str, int]] = []
    for lineno, line in enumerate(code.splitlines(), 1):
        for ch in line:
            if ch in PAIRS:
                stack.append((ch, lineno))
            elif ch in PAIRS.values():
                if not stack or PAIRS[stack[-1][0]] != ch:
                    return f"unexpected {ch!r} on line {lineno}"
                stack.pop()
    if stack:
        ch, lineno = stack[-1]
        return f"{ch!r} opened on line {lineno} never closes"
    return None


CMDLET = re.compile(r"(?<![\w$.-])([A-Z][a-z]+-[A-Z][A-Za-z]+)\b")
PARAMETER = re.compile(r"(?<![\w$])-([A-Z][A-Za-z]+)(?::\$\w+)?\b")


@dataclass(frozen=True)
class Invocation:
    cmdlet: str
    line: int
    parameters: tuple[str, ...]


def invocations(code: str) -> list[Invocation]:
    """Every Verb-Noun call in the code with the -Parameter names of its own statement.

    A statement ends at a newline without a trailing backtick, or at | ; { } or an unmatched ), so a
    script block or a pipeline after the cmdlet is not mistaken for its parameters. A parenthesised
    argument, such as `$x.Split('@')[0]`, is part of the statement but its contents are not parameters.
    """
    found: list[Invocation] = []
    for match in CMDLET.finditer(code):
        start = match.end()
        end = start
        own: list[str] = []
        depth = 0
        while end < len(code):
            ch = code[end]
            if depth == 0:
                if ch == "\n" and code[end - 1:end] != "`":
                    break
                if ch in "|;{})":
                    break
            if ch in "([":
                depth += 1
            elif ch in ")]" and depth:
                depth -= 1
            own.append(ch if depth == 0 else " ")
            end += 1
        params = tuple(PARAMETER.findall("".join(own)))
        line = code.count("\n", 0, match.start()) + 1
        found.append(Invocation(match.group(1), line, params))
    return found


def functions_defined(code: str) -> set[str]:
    return set(re.findall(r"(?m)^\s*function\s+([A-Za-z]+-[A-Za-z]+)", code))
