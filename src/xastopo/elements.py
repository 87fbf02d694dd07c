"""Element symbols by atomic number (Z = 1..92), for one-hot atom types and input checks."""

from __future__ import annotations

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
