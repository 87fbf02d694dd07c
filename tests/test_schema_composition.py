"""The request schema's composition fields (``formula`` / ``elements``): what is accepted, and every
refusal named by material index and field, worded as the service's 422 and the CLI's error line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from xastopo.schema import Prediction, parse_request, request_errors

ENERGY = [8980.0 + i for i in range(40)]
MU = [min(1.0, max(0.0, (e - 8990.0) / 10.0)) for e in ENERGY]


def spectrum(element: str) -> dict:
    return {"element": element, "energy": ENERGY, "mu": MU}


def first_error(material: dict) -> dict:
    good = {"material_id": "ok", "spectra": [spectrum("Cu")]}
    with pytest.raises(ValidationError) as info:
        parse_request({"materials": [good, material]})
    return request_errors(info.value)[0]


def test_old_shape_unchanged() -> None:
    m = parse_request({"materials": [{"material_id": "a", "spectra": [spectrum("Ti"), spectrum("Cu")]}]}).materials[0]
    assert m.formula is None and m.elements is None
    assert m.composition == ["Ti", "Cu"]  # the spectra's elements, by Z


def test_composition_only_and_with_spectra() -> None:
    req = parse_request({"materials": [
        {"material_id": "f", "formula": "Cu2S"},
        {"material_id": "e", "elements": ["Se", "Bi"], "spectra": []},
        {"material_id": "fs", "formula": "Ca(OH)2", "spectra": [spectrum("Ca")]},
    ]})
    f, e, fs = req.materials
    assert f.composition == ["S", "Cu"] and f.spectra == []
    assert e.composition == ["Se", "Bi"]
    assert fs.composition == ["H", "O", "Ca"]


@pytest.mark.parametrize(("material", "loc", "fragment"), [
    ({"material_id": "x", "formula": "Xx2O"}, "materials[1].formula", "unknown element symbol 'Xx'"),
    ({"material_id": "x", "formula": "Cu(S"}, "materials[1].formula", "unbalanced '('"),
    ({"material_id": "x", "formula": "  "}, "materials[1].formula", "empty formula"),
    ({"material_id": "x", "elements": ["Cu", "Qq"]}, "materials[1].elements[1]", "unknown element symbol 'Qq'"),
    ({"material_id": "x", "elements": ["Cu", "Cu"]}, "materials[1].elements[1]", "duplicate element 'Cu'"),
    ({"material_id": "x", "elements": []}, "materials[1].elements", "no elements"),
    ({"material_id": "x", "formula": "Cu2S", "spectra": [spectrum("Cu"), spectrum("O")]},
     "materials[1].spectra[1].element", "'O' is not in the formula 'Cu2S'"),
    ({"material_id": "x", "elements": ["Cu", "S"], "spectra": [spectrum("O")]},
     "materials[1].spectra[0].element", "'O' is not in elements [Cu, S]"),
    ({"material_id": "x"}, "materials[1].spectra", "no spectra"),
    ({"material_id": "x", "spectra": []}, "materials[1].spectra", "or the material's formula or elements"),
    ({"material_id": "x", "formula": "CuO", "elements": ["Cu", "O"]}, "materials[1].elements", "not both"),
    ({"material_id": "x", "formula": 5}, "materials[1].formula", "string"),
])
def test_refusals_name_material_and_field(material: dict, loc: str, fragment: str) -> None:
    err = first_error(material)
    assert err["loc"] == loc, err
    assert fragment in err["message"], err
    assert err["index"] == 1 and err["field"] == loc.removeprefix("materials[1].")


def test_prediction_defaults_keep_old_answers() -> None:
    p = Prediction(material_id="a", probability_topological=0.5, label="trivial", elements_used=["Cu"])
    assert p.uncertainty is None and p.elements_with_spectrum == [] and p.elements_by_type == []
    assert p.composition_only is False


def test_material_sites_composition_is_cached_but_named_per_material() -> None:
    """``MaterialSites.composition_z`` caches compositions by (formula, elements, spectra's elements): a
    cached refusal still names the asking material's own index and the position of its own spectrum, a
    refusal is raised again on every call, and the shared Z array cannot be written."""
    from xastopo.inference import InputError, MaterialSites

    site = [(ENERGY, MU, 1.0)]
    first = MaterialSites("a", {"Cu": site, "Se": site}, {"Cu": 0, "Se": 1}, formula="Bi2Se3")
    second = MaterialSites("b", {"Cu": site, "Se": site}, {"Se": 0, "Cu": 1}, formula="Bi2Se3")
    for index, m, field in ((3, first, "spectra[0].element"), (7, second, "spectra[1].element"),
                            (3, first, "spectra[0].element")):
        with pytest.raises(InputError) as info:
            m.composition_z(index)
        assert (info.value.index, info.value.field) == (index, field)
        assert "'Cu' is not in the formula 'Bi2Se3'" in info.value.message
    with pytest.raises(InputError) as info:
        MaterialSites("c", {}, {}, formula="Bi2Xx3").composition_z(2)
    assert (info.value.index, info.value.field) == (2, "formula") and "Xx" in info.value.message
    with pytest.raises(InputError) as info:
        MaterialSites("d", {}, {}, elements=("Bi", "Qq")).composition_z(4)
    assert (info.value.index, info.value.field) == (4, "elements[1]")
    els, z = MaterialSites("e", {"Se": site}, {"Se": 0}, formula="Bi2Se3").composition_z(0)
    again = MaterialSites("f", {"Se": site}, {"Se": 0}, formula="Bi2Se3").composition_z(1)[1]
    assert els == ("Se", "Bi") and z.tolist() == [34, 83] and again is z
    with pytest.raises(ValueError):
        z[0] = 1
    assert MaterialSites("g", {"Se": site}, {"Se": 0}, formula="Bi2Se3").composition(0) == ["Se", "Bi"]
    # elements as a list (library callers; unhashable): the same rules without the cache
    assert MaterialSites("h", {"Se": site}, {"Se": 0}, elements=["Bi", "Se"]).composition_z(0)[0] == ("Se", "Bi")
    with pytest.raises(InputError) as info:
        MaterialSites("i", {}, {}, elements=["Bi", "Qq"]).composition_z(5)
    assert (info.value.index, info.value.field) == (5, "elements[1]")
