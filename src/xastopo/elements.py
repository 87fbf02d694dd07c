"""Element symbols by atomic number (Z = 1..92), for one-hot atom types and input checks."""

from __future__ import annotations

import re

SYMBOLS: tuple[str, ...] = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br "
    "Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho "
    "Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U"
).split()
Z_OF: dict[str, int] = {s: i + 1 for i, s in enumerate(SYMBOLS)}
N_TYPES = 93  # one-hot width: index Z (1..92); index 0 is padding


def atomic_number(symbol: str) -> int:
    """Z of an element symbol; KeyError with a readable message when unknown."""
    try:
        return Z_OF[symbol]
    except KeyError:
        raise KeyError(f"unknown element symbol '{symbol}'") from None


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)?|(\()|(\))(\d+(?:\.\d+)?)?|(\s+)")


def parse_formula(formula: str) -> dict[str, float]:
    """Element amounts of a chemical formula: 'Cu2O', 'Bi2 Se3', 'Ca(OH)2', 'Cu2 O1' (CIF formula_sum).

    Raises ValueError naming the problem (unknown element symbol, unbalanced parentheses, stray
    characters, empty formula), so a request's bad ``formula`` is answered in words.
    """
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError("empty formula")
    stack: list[dict[str, float]] = [{}]
    pos = 0
    while pos < len(formula):
        m = _TOKEN.match(formula, pos)
        if m is None:
            raise ValueError(f"cannot read formula '{formula}' at '{formula[pos:]}'")
        sym, num, opening, closing, mult, _space = m.groups()
        if sym:
            if sym not in Z_OF:
                raise ValueError(f"unknown element symbol '{sym}' in formula '{formula}'")
            stack[-1][sym] = stack[-1].get(sym, 0.0) + float(num or 1)
        elif opening:
            stack.append({})
        elif closing:
            if len(stack) == 1:
                raise ValueError(f"unbalanced ')' in formula '{formula}'")
            group = stack.pop()
            for el, n in group.items():
                stack[-1][el] = stack[-1].get(el, 0.0) + n * float(mult or 1)
        pos = m.end()
    if len(stack) != 1:
        raise ValueError(f"unbalanced '(' in formula '{formula}'")
    if not stack[0]:
        raise ValueError(f"no element in formula '{formula}'")
    return stack[0]


def formula_elements(formula: str) -> list[str]:
    """The elements of a formula, sorted by Z (the absorbers' order in the model's inputs)."""
    return sorted(parse_formula(formula), key=atomic_number)
