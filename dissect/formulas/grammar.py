"""Left-deep formulas over concepts: the tuple form the search uses, and the text form units.csv holds.

    f = (4, (OR, 7), (AND_NOT, 2))              # ((c4 OR c7) AND NOT c2), concept columns
    to_text(f, names)                           # "((circle OR square) AND NOT red)"
    parse(text, names)                          # back to the tuple (FormulaError when unknown)
    canonical(f)                                # equal for formulas equal up to commutativity
    mentions(text, names)                       # {"circle", "square", "red"}

Grammar (DESIGN.md, `formula`): `label`, `(F OR label)`, `(F AND label)`, `(F AND NOT label)`,
concept names exactly as in concepts.csv. A formula is a first concept column followed by
(operator, concept column) steps; its length is the number of concepts.
"""
from __future__ import annotations

import difflib
from typing import Sequence

from dissect.errors import RunError

OR, AND, AND_NOT = 0, 1, 2
OP_TEXT = {OR: "OR", AND: "AND", AND_NOT: "AND NOT"}
Formula = tuple     # (c0, (op, c1), (op, c2), ...)


class FormulaError(RunError):
    """A formula or concept name that cannot be read; the message names the fix."""


def length(f: Formula) -> int:
    """Number of concepts in the formula."""
    return len(f)


def concepts_of(f: Formula) -> list[int]:
    """Concept columns in the order they appear."""
    return [f[0]] + [c for _, c in f[1:]]


def to_text(f: Formula, names: Sequence[str]) -> str:
    """The DESIGN.md text form: `label` or `(F OP label)`, left-deep."""
    text = str(names[f[0]])
    for op, c in f[1:]:
        text = f"({text} {OP_TEXT[op]} {names[c]})"
    return text


def canonical(f: Formula) -> tuple:
    """A key equal for formulas that differ only by commutativity.

    Consecutive ORs commute, and consecutive AND / AND NOT steps commute with each other; the
    first concept joins the first run unless that run starts with AND NOT.
    """
    runs: list[tuple[str, frozenset]] = []
    steps = list(f[1:])
    if not steps:
        return (("leaf", f[0]),)
    kind = "or" if steps[0][0] == OR else "and"
    first = (OR if kind == "or" else AND, f[0])
    current: list = [first]
    for op, c in steps:
        k = "or" if op == OR else "and"
        if k != kind:
            runs.append((kind, frozenset(current)))
            kind, current = k, []
        current.append((op, c))
    runs.append((kind, frozenset(current)))
    return tuple(runs)


def parse(text: str, names: Sequence[str]) -> Formula:
    """The tuple form of a formula in the DESIGN.md grammar; FormulaError naming the problem."""
    index = {str(n): i for i, n in enumerate(names)}
    text = text.strip()
    steps: list = []
    while text.startswith("(") and text.endswith(")"):
        inner = text[1:-1]
        if inner.startswith("("):          # left operand is a formula: up to its matching ")"
            depth = 0
            for cut, ch in enumerate(inner):
                depth += (ch == "(") - (ch == ")")
                if depth == 0:
                    break
            head, rest = inner[: cut + 1], inner[cut + 1:]
        else:
            head, rest = "", inner
        for op in (AND_NOT, AND, OR):
            word = f" {OP_TEXT[op]} "
            pos = 0 if head else rest.find(word)
            if (head and rest.startswith(word)) or (not head and pos > 0):
                steps.append((op, _lookup(rest[pos + len(word):], index)))
                text = head or rest[:pos]
                break
        else:
            raise FormulaError(f"cannot read formula '{text}': use label, (F OR label), "
                               "(F AND label) or (F AND NOT label)")
    return (_lookup(text, index),) + tuple(reversed(steps))


def _lookup(name: str, index: dict[str, int]) -> int:
    name = name.strip()
    if name not in index:
        raise FormulaError(unknown_concept_message(name, list(index)))
    return index[name]


def unknown_concept_message(name: str, names: Sequence[str]) -> str:
    """One line naming an unknown concept and the closest known names (difflib)."""
    close = difflib.get_close_matches(name, [str(n) for n in names], n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else \
        "see concepts.csv in the run folder for the names"
    return f"unknown concept '{name}': {hint}"


def mentions(text: str, names: Sequence[str]) -> set[str]:
    """Concept names a formula text mentions (empty for an empty or unreadable formula)."""
    if not text:
        return set()
    try:
        return {str(names[c]) for c in concepts_of(parse(text, names))}
    except FormulaError:
        return set()
