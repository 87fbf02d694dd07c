"""Measured (beamline) spectra: read the files a beamline writes into energy + mu.

Formats: XDI (``# Column.N: name units`` names the columns, ``# Element.symbol`` / ``# Element.edge``;
also the GSE variants ``# Scan.element`` / ``# Scan.edge``), the older Athena/uwxafs ``.xmu`` text
(``#%atom``, ``#%edge``, ``#%cols: N E XMU``), EPICS/XDAC scan files (``;``-commented headers, a column
label line), CSV and plain two- or multi-column text. Columns are recognised by name:

* ``mu`` (``mu``, ``xmu``, ``mutrans``, ``mu_trans``, ``log(i0/it)``, ``fluorescence...``): used as is;
* ``i0`` with ``itrans`` (``it``, ``i1``): transmission, mu = ln(I0/It);
* ``i0`` with ``ifluor`` (``if``, ``fluor``): fluorescence, mu = If/I0.

A file whose columns cannot be told apart (no names, more than two columns) needs ``columns``
(``{"energy": "1", "mu": "3"}`` or names: ``{"energy": "energy", "i0": "i0", "itrans": "it"}``).
Energies in keV (units in the header, or a range below 100) are converted to eV.

Why not xraylarch: its 2026 release pulls ~40 packages (mkl, pyFAI, silx, wx bits) into the Bento
for a reader of a few columns; the XDI layout is small and documented, so this module reads it and
:mod:`xastopo.preprocessing.measured` follows larch's normalization conventions (README).

Every failure is a :class:`MeasuredError` whose message names the file and the reason (its
``reason`` is a short code, counted by the measured-spectra report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xastopo.elements import Z_OF

__all__ = ["COLUMN_ROLES", "MeasuredError", "MeasuredSpectrum", "parse_columns_option", "read_measured"]

COLUMN_ROLES = ("energy", "mu", "i0", "itrans", "ifluor")
_COMMENT = ("#", ";", "!", "%", "*")
_ENERGY = {"energy", "e", "energy(ev)", "energy_ev", "ev", "p1", "mono_energy", "energy(kev)"}
_MU = {"mu", "xmu", "mutrans", "mu_trans", "mu(e)", "mufluor", "mu_fluor", "log(i0/it)", "ln(i0/it)",
       "absorption", "fluorescence_emission(au)", "herfd"}
_I0 = {"i0", "io", "izero", "d1"}
_ITRANS = {"itrans", "it", "i1", "i_t", "d2"}
_IFLUOR = {"ifluor", "if", "fluor", "ifl", "i_f", "fluorescence", "iff"}


class MeasuredError(ValueError):
    """A measured file cannot be used: ``<file>: <reason>`` (``reason`` is a short code)."""

    def __init__(self, source: str, reason: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source, self.reason, self.detail = source, reason, message


@dataclass
class MeasuredSpectrum:
    """One measured spectrum as read: absolute energy (eV, strictly increasing) and mu (any scale).

    ``mode``: how mu was obtained (``mu column 'xmu'``, ``transmission ln(i0/itrans)``,
    ``fluorescence ifluor/i0``); ``edge``: from the header (None when it does not say).
    """

    element: str
    edge: str | None
    energy: np.ndarray
    mu: np.ndarray
    source: str
    mode: str
    columns: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)


def parse_columns_option(text: str | None) -> dict[str, str] | None:
    """``"energy=1,i0=2,itrans=3"`` (the CLI's ``--columns``) → dict; roles checked, names or 1-based
    numbers as values."""
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ValueError(f"--columns: '{part}' is not role=column (roles: {', '.join(COLUMN_ROLES)})")
        role, col = (s.strip() for s in part.split("=", 1))
        if role.lower() not in COLUMN_ROLES:
            raise ValueError(f"--columns: unknown role '{role}' (roles: {', '.join(COLUMN_ROLES)})")
        out[role.lower()] = col
    return out


def _norm_name(name: str) -> str:
    return name.strip().lower().strip("{}[]")


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        vals = [float(t.replace("D", "E").replace("d", "e")) for t in tokens]
    except ValueError:
        return None
    return vals


def _text(content: bytes | str | Path, source: str) -> str:
    if isinstance(content, Path):
        try:
            content = content.read_bytes()
        except OSError as exc:
            raise MeasuredError(source, "unreadable", f"cannot read the file ({exc.strerror})") from None
    if isinstance(content, bytes):
        if b"\x00" in content[:4096]:
            raise MeasuredError(source, "not_text", "not a text file (binary content)")
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return content.decode("latin-1")
    return content


def _data_block(lines: list[str], source: str) -> tuple[int, int, str | None, int]:
    """(first, last+1, delimiter, n_columns) of the longest run of numeric rows."""
    best = (0, 0, None, 0)
    i, n = 0, len(lines)
    while i < n:
        s = lines[i].strip()
        delim = "," if "," in s else ("\t" if "\t" in s else None)
        toks = [t.strip() for t in s.split(delim)] if delim else s.split()
        toks = [t for t in toks if t != ""]
        vals = _floats(toks) if toks and not s.startswith(_COMMENT) else None
        if vals is None or len(vals) < 2:
            i += 1
            continue
        ncol, j = len(vals), i + 1
        while j < n:
            t = lines[j].strip()
            if not t:
                j += 1
                continue
            tt = [x.strip() for x in t.split(delim)] if delim else t.split()
            tt = [x for x in tt if x != ""]
            v = None if t.startswith(_COMMENT) else _floats(tt)
            if v is None or len(v) != ncol:
                break
            j += 1
        if j - i > best[1] - best[0]:
            best = (i, j, delim, ncol)
        i = j
    if best[1] == best[0]:
        raise MeasuredError(source, "no_data", "no numeric data columns found")
    return best


def _header(lines: list[str]) -> tuple[dict[str, str], dict[int, str]]:
    """Key: value pairs of the header (XDI ``Family.key``, xmu ``%key``, ``key= value``) and the
    XDI column names (``Column.N``, 1-based)."""
    meta: dict[str, str] = {}
    cols: dict[int, str] = {}
    for line in lines:
        s = line.strip().lstrip("#;!*").strip()
        m = re.match(r"^%?([A-Za-z_][\w.]*)\s*[:=]\s*(.*)$", s)
        if not m:
            continue
        key, val = m.group(1).lower(), m.group(2).strip()
        cm = re.match(r"^column\.(\d+)$", key)
        if cm:
            cols[int(cm.group(1))] = val
        else:
            meta.setdefault(key, val)
    return meta, cols


def _label_line(lines: list[str], first: int, ncol: int, delim: str | None) -> list[str] | None:
    """The nearest non-numeric line above the data with exactly one label per column."""
    for k in range(first - 1, max(-1, first - 6), -1):
        s = lines[k].strip().lstrip("#;!*%").strip()
        if not s or set(s) <= set("-=_ "):
            continue
        toks = [t.strip() for t in s.split(delim)] if delim else s.split()
        toks = [t for t in toks if t]
        if len(toks) == ncol and _floats(toks) is None:
            return toks
        if k < first - 2:
            break
    return None


def _xmu_cols(meta: dict[str, str], ncol: int) -> list[str] | None:
    """``#%cols: 612 E XMU I0`` (uwxafs/Athena xmu): the names after the point count."""
    val = meta.get("cols")
    if not val:
        return None
    toks = val.split()
    if toks and _floats(toks[:1]) is not None:
        toks = toks[1:]
    return toks if len(toks) == ncol else None


def _epics_names(lines: list[str], ncol: int) -> list[str] | None:
    """EPICS scan files: ``P1 = {Energy}``, ``D1 = {I0}`` lines, in column order."""
    found = []
    for line in lines:
        m = re.match(r"^[;#]\s*([PD]\d+)\s*=\s*\{([^}]*)\}", line.strip())
        if m:
            found.append(m.group(2))
    return found if len(found) == ncol else None


def _element_from_header(meta: dict[str, str]) -> str | None:
    for key in ("element.symbol", "scan.element", "atom", "element"):
        val = meta.get(key, "").strip()
        if val in Z_OF:
            return val
    return None


def _edge_from_header(meta: dict[str, str]) -> str | None:
    for key in ("element.edge", "scan.edge", "edge"):
        val = meta.get(key, "").strip()
        if re.fullmatch(r"(K|L1|L2|L3|M[1-5]|N[1-7])", val, flags=re.IGNORECASE):
            return val.upper()
    return None


def _missing_role(roles: dict[str, int]) -> str:
    """What a set of roles without mu lacks: ``i0`` beside itrans/ifluor, one of them beside i0, or mu."""
    if "i0" in roles:
        return "itrans or ifluor (with i0: transmission or fluorescence)"
    if "itrans" in roles or "ifluor" in roles:
        return "i0 (transmission and fluorescence divide by it)"
    return "mu (or i0 with itrans or ifluor)"


def _resolve(names: list[str], columns: dict[str, str] | None, source: str) -> dict[str, int]:
    """Role → 0-based column index, from the user's ``columns`` or the column names."""
    low = [_norm_name(n) for n in names]
    if columns:
        out: dict[str, int] = {}
        for role, col in columns.items():
            if role not in COLUMN_ROLES:
                raise MeasuredError(source, "bad_columns", f"unknown column role '{role}' (roles: "
                                                         f"{', '.join(COLUMN_ROLES)})")
            col = str(col).strip()
            if col.isdigit():
                j = int(col) - 1
                if not 0 <= j < len(names):
                    raise MeasuredError(source, "bad_columns", f"column {col} for {role}: the file has "
                                                              f"{len(names)} columns")
            elif _norm_name(col) in low:
                j = low.index(_norm_name(col))
            else:
                raise MeasuredError(source, "bad_columns", f"no column named '{col}' for {role} (columns: "
                                                          f"{', '.join(names)})")
            out[role] = j
        out.setdefault("energy", 0)
        if "mu" not in out and not ("i0" in out and ("itrans" in out or "ifluor" in out)):
            if len(names) == 2 and set(out) == {"energy"}:  # the other column, as without columns
                out["mu"] = 1 - out["energy"]
            else:
                raise MeasuredError(source, "bad_columns", f"the columns given ({', '.join(out)}) leave mu "
                                                          f"undefined: missing {_missing_role(out)}")
        return out

    def find(aliases: set[str]) -> int | None:
        return next((j for j, n in enumerate(low) if n in aliases), None)

    out = {}
    e = find(_ENERGY)
    out["energy"] = 0 if e is None else e
    for role, aliases in (("mu", _MU), ("i0", _I0), ("itrans", _ITRANS), ("ifluor", _IFLUOR)):
        j = find(aliases)
        if j is not None and j != out["energy"]:
            out[role] = j
    if "mu" not in out and not ("i0" in out and ("itrans" in out or "ifluor" in out)):
        if len(names) == 2:
            out["mu"] = 1
        else:
            raise MeasuredError(source, "ambiguous_columns",
                                f"cannot tell which columns hold mu (columns: {', '.join(names)}): name them, "
                                "e.g. --columns energy=1,mu=2 or energy=1,i0=2,itrans=3 (or ifluor=)")
    return out


def read_measured(content: bytes | str | Path, filename: str | None = None, element: str | None = None,
                  columns: dict[str, str] | None = None, min_points: int | None = None) -> MeasuredSpectrum:
    """Read one measured spectrum from a file's bytes/text (or its path).

    ``filename`` names the source in errors (the upload's name; defaults to the path). ``element``:
    the absorbing element when the header does not name it (an error if it contradicts the header).
    ``columns``: role → column (1-based number or name) for files whose columns are ambiguous.
    ``min_points``: fewest data rows, a ``too_few_points`` MeasuredError naming the file below it; the
    caller passes the model's (``Preprocessor.min_points``, params ``ingest.min_points``). None: not
    checked here; the preprocessor's validation refuses a short spectrum when it is used.
    """
    source = filename or (str(content) if isinstance(content, Path) else "<upload>")
    lines = _text(content, source).splitlines()
    first, last, delim, ncol = _data_block(lines, source)
    meta, xdi_cols = _header(lines[:first])
    if xdi_cols and len(xdi_cols) >= ncol:
        names = [xdi_cols.get(j + 1, f"col{j + 1}") for j in range(ncol)]
    else:
        names = (_epics_names(lines[:first], ncol) or _xmu_cols(meta, ncol)
                 or _label_line(lines, first, ncol, delim) or [f"col{j + 1}" for j in range(ncol)])
    units = [n.split()[1].lower() if len(n.split()) > 1 else "" for n in names]
    names = [n.split()[0] if n.split() else n for n in names]
    rows = []
    for line in lines[first:last]:
        s = line.strip()
        if s:
            toks = [t.strip() for t in s.split(delim)] if delim else s.split()
            rows.append(_floats([t for t in toks if t]))
    data = np.asarray(rows, dtype=float)
    if min_points is not None and len(data) < min_points:
        raise MeasuredError(source, "too_few_points", f"only {len(data)} data rows (at least {min_points} needed)")
    roles = _resolve(names, columns, source)
    energy = data[:, roles["energy"]].copy()
    if "mu" in roles:
        mu, mode = data[:, roles["mu"]].copy(), f"mu column '{names[roles['mu']]}'"
    elif "itrans" in roles:
        i0, it = data[:, roles["i0"]], data[:, roles["itrans"]]
        if np.any(i0 <= 0) or np.any(it <= 0):
            raise MeasuredError(source, "bad_intensity", "transmission needs positive i0 and itrans "
                                                         "(ln(I0/It)); a zero or negative count was found")
        mu, mode = np.log(i0 / it), f"transmission ln({names[roles['i0']]}/{names[roles['itrans']]})"
    else:
        i0, fl = data[:, roles["i0"]], data[:, roles["ifluor"]]
        if np.any(i0 == 0):
            raise MeasuredError(source, "bad_intensity", "fluorescence needs nonzero i0 (If/I0)")
        mu, mode = fl / i0, f"fluorescence {names[roles['ifluor']]}/{names[roles['i0']]}"
    if not (np.all(np.isfinite(energy)) and np.all(np.isfinite(mu))):
        bad = int(np.flatnonzero(~(np.isfinite(energy) & np.isfinite(mu)))[0])
        raise MeasuredError(source, "not_finite", f"NaN or infinite value at data row {bad + 1}")
    eunit = units[roles["energy"]] if roles["energy"] < len(units) else ""
    if eunit == "kev" or "kev" in _norm_name(names[roles["energy"]]) or (eunit != "ev" and energy.max() < 100.0):
        energy = energy * 1000.0
    d = np.diff(energy)
    if np.any(d <= 0):
        k = int(np.flatnonzero(d <= 0)[0])
        raise MeasuredError(source, "non_monotonic_energy",
                            f"energy is not strictly increasing (data row {k + 2}: {energy[k + 1]:.3f} eV after "
                            f"{energy[k]:.3f} eV)")
    head_el = _element_from_header(meta)
    if element is not None:
        if element not in Z_OF:
            raise MeasuredError(source, "unknown_element", f"unknown element symbol '{element}'")
        if head_el is not None and head_el != element:
            raise MeasuredError(source, "element_mismatch",
                                f"the header names element {head_el} but {element} was given")
    el = element or head_el
    if el is None:
        raise MeasuredError(source, "no_element", "the header does not name the absorbing element: give it "
                                                  "(--element, or 'element' in the upload)")
    used = {role: names[j] for role, j in roles.items()}
    return MeasuredSpectrum(el, _edge_from_header(meta), energy, mu, source, mode, used, meta)
