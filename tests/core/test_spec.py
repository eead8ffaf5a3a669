"""core.common.spec: the model's input/output contract, importable without TensorFlow, and the card check that refuses a
model the engine cannot honour."""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.common import spec
from core.common.errors import UrbanMTLError
from core.common.spec import check_card

REPO = Path(__file__).resolve().parents[2]
BUNDLED_CARD = REPO / "models" / "model_card.json"


def bundled_card() -> dict:
    return json.loads(BUNDLED_CARD.read_text())


def refusal(card: dict) -> str:
    with pytest.raises(UrbanMTLError) as info:
        check_card(card, "The model 'x.keras'")
    return str(info.value)


# --- no TensorFlow ---

_NO_TF = "import sys; {imports}; bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; " \
         "sys.exit('loaded: ' + ', '.join(bad) if bad else 0)"


@pytest.mark.parametrize("module", ["core.common.spec", "core.tiling", "core.predict", "core.mapping.predict",
                                    "core.mapping.accumulate", "core.network.inference", "core.finetuning.setup",
                                    "core.finetune_worker", "core.worker"])
def test_light_modules_do_not_load_tensorflow(module):
    done = subprocess.run([sys.executable, "-c", _NO_TF.format(imports=f"import {module}")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_plugin_and_ui_modules_do_not_load_tensorflow(tmp_path):
    """Inside QGIS's Python (offscreen): the plugin package as QGIS imports it, plugin.py and every ui module.
    Skipped where QGIS's Python bindings are absent."""
    pytest.importorskip("qgis.core")
    (tmp_path / "urbanmtl").symlink_to(REPO, target_is_directory=True)
    ui = sorted(p.stem for p in (REPO / "ui").glob("*.py") if p.stem != "__init__")
    imports = (f"sys.path.insert(0, {str(tmp_path)!r}); from qgis.core import QgsApplication; "
               f"app = QgsApplication([], False); app.initQgis(); import urbanmtl, urbanmtl.plugin; "
               + "; ".join(f"import urbanmtl.ui.{m}" for m in ui))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", _NO_TF.format(imports=imports)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the contract, stated once ---


def test_contract_values():
    assert spec.MODEL_BANDS == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    assert (spec.INPUT_GSD_M, spec.HSE_GSD_M, spec.LCZ_PROB_GSD_M, spec.LCZ_GSD_M) == (10, 20, 20, 100)
    assert spec.OUTPUT_FACTOR == 2 and spec.CELL == 5 and spec.SIZE_MULTIPLE == 8 and spec.MIN_TILE_SIZE == 16
    assert (spec.DEFAULT_TILE_SIZE, spec.DEFAULT_OVERLAP) == (256, 32) and spec.DN_SCALE == 10000


#: Other names of core.common.spec's facts, kept where they are used (as floats): core.common.bands' and core.inputs.checks'.
_ALIASES = {"QUANTIFICATION_VALUE": "DN_SCALE", "BASELINE_04_OFFSET": "BASELINE_OFFSET", "DN_SCALE": "DN_SCALE"}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _second_definitions(path: Path) -> list[str]:
    """Where `path` states one of core.common.spec's facts itself: a literal assigned to one of spec's names (or an alias),
    the lock suffix in a string, or a regular expression of the temporaries' names."""
    facts = {name for name in vars(spec) if name.isupper()} | set(_ALIASES)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            targets, value = [], None
        for target in targets:
            if isinstance(target, ast.Name) and target.id in facts:
                try:
                    ast.literal_eval(value)
                except ValueError:
                    continue                                 # computed from core.common.spec (or from something else)
                found.append(f"{target.id} = {ast.unparse(value)}")
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and (spec.LOCK_SUFFIX in node.value or r"\.tmp" in node.value)):
            found.append(repr(node.value))
    return [f"{path.relative_to(REPO)}: {what}" for what in found]


def test_no_module_but_spec_states_the_contract():
    """core.common.spec states each fact once: no other module of core/, ui/ or plugin.py assigns a literal to one of its
    names, writes the lock suffix or builds the temporaries' name pattern itself (names kept for old importers
    are read from core.common.spec)."""
    modules = sorted((REPO / "core").rglob("*.py")) + sorted((REPO / "ui").glob("*.py")) + [REPO / "plugin.py"]
    found = [line for path in modules if path != REPO / "core" / "common" / "spec.py"
             for line in _second_definitions(path)]
    assert found == []
    # The LCZ legend's GDAL category names (.aux.xml) have one writer too, which core.outputs.export uses.
    assert [p for p in modules if "<CategoryNames>" in p.read_text(encoding="utf-8")] == [
        REPO / "core" / "outputs" / "writer.py"]


def test_other_names_of_the_contract_read_it():
    from core.common import bands, lcz
    from core.inputs import checks
    from core.outputs import export, lock, plan, writer

    assert bands.MODEL_BANDS is spec.MODEL_BANDS and lcz.NUM_CLASSES == spec.NUM_CLASSES
    assert bands.QUANTIFICATION_VALUE == checks.DN_SCALE == spec.DN_SCALE
    assert isinstance(bands.QUANTIFICATION_VALUE, float) and isinstance(bands.BASELINE_04_OFFSET, float)
    assert bands.BASELINE_04_OFFSET == spec.BASELINE_OFFSET
    assert export.MAJORITY_SIZES is spec.MAJORITY_SIZES and export.LCZ_NODATA == writer.LCZ_NODATA == spec.LCZ_NODATA
    assert writer.FLOAT_NODATA == spec.FLOAT_NODATA and plan.RASTER_SUFFIXES is spec.RASTER_SUFFIXES
    assert lock.LOCK_SUFFIX == spec.LOCK_SUFFIX


def test_temporary_names_match_their_pattern():
    from core.outputs.temporaries import temporary_name

    final = Path("/out/map.v2.tif")
    tmp = temporary_name(final)
    pattern = spec.temporary_pattern(final)
    for name in (tmp.name, tmp.name.replace(".tmp.tif", ".tmp.cog.tif"), tmp.name + ".aux.xml"):
        assert pattern.match(name), name
    assert tmp.parent == final.parent and tmp.name.startswith(".map.v2.")
    for other in ("map.v2.tif", ".map.v2.1234567.tmp.tif", ".map.v2.0123abcd.tmp.tiff", ".map.0123abcd.tmp.tif"):
        assert not pattern.match(other), other


# --- the card check ---


def test_bundled_card_is_accepted():
    card = bundled_card()
    assert spec.card_problems(card) == [] and spec.card_scale(card) == 10000
    check_card(card)


@pytest.mark.parametrize("card", [{}, {"format": "urbanmtl-model-card/1", "variant": "mtl_learned_p2f"},
                                  {"bands": None, "outputs": {"hse": {}}}, None])
def test_card_without_the_contract_keys_is_accepted(card):
    check_card(card)


def test_card_with_other_bands_is_refused():
    card = bundled_card()
    card["bands"] = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11"]
    text = refusal(card)
    assert "lacks B12" in text and "has B1" in text and "retrain" in text and "10 bands" in text
    assert text.startswith("The model 'x.keras' cannot be used")


def test_card_with_the_bands_in_another_order_is_refused():
    card = bundled_card()
    card["bands"] = list(reversed(spec.MODEL_BANDS))
    assert "another order" in refusal(card)


def test_card_with_another_scale_is_refused():
    card = bundled_card()
    card["scaling"]["reflectance"] = "(DN + offset) / 1"
    text = refusal(card)
    assert "reflectance scale (DN + offset) / 1," in text and "10000" in text
    card = copy.deepcopy(bundled_card())
    card["scaling"] = {"scale": 255}
    assert "/ 255" in refusal(card)


def test_card_with_another_grid_is_refused():
    card = bundled_card()
    card["outputs"]["lcz"]["map_gsd_m"] = 50
    assert "LCZ output grid map_gsd_m=50 m" in refusal(card)
    card = bundled_card()
    card["outputs"]["hse"]["gsd_m"] = 10
    assert "HSE output grid gsd_m=10 m" in refusal(card)
    card = bundled_card()
    card["input_gsd_m"] = 20
    assert "input GSD 20 m" in refusal(card)


def test_card_with_another_size_multiple_or_class_count_is_refused():
    card = bundled_card()
    card["size_multiple"] = 16
    card["outputs"]["lcz"]["classes"] = 10
    text = refusal(card)
    assert "size_multiple 16" in text and "LCZ classes classes=10" in text
