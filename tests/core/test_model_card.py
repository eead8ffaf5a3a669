"""The bundled model's card: the JSON the code reads and the Markdown people read tell the same story (issue 27:
v5 trained on both dates of every site, with its fit, date-to-date and leave-region-out figures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODELS / "model_card.json").read_text())


@pytest.fixture(scope="module")
def markdown() -> str:
    return (MODELS / "MODEL_CARD.md").read_text()


def test_card_names_the_bundled_version_in_both_files(card, markdown):
    version = card["name"].split("(")[0].strip().split()[-1]
    assert version == "v5", card["name"]
    assert markdown.splitlines()[0] == f"# Model card: urbanmtl bundled model {version}"


def test_every_site_trained_on_both_dates_and_none_kept_out(card):
    scenes = card["training_scenes"]
    by_city: dict[str, set] = {}
    for scene in scenes:
        assert scene["use"] == "training", scene
        by_city.setdefault(scene["scene"].rsplit("_", 1)[0], set()).add(scene["folder"])
    assert len(by_city) == 19 and all(folders == {"cities", "cities_date2"} for folders in by_city.values()), by_city
    config = card["training"]["config"]
    assert not config["val_scenes"] and config["val_fraction"] == 0
    assert any(path.endswith("cities_date2") for path in config["data"])


def test_markdown_quotes_the_json_figures(card, markdown):
    fit = card["training_fit"]["summary"]
    means = fit["mean_over_folds"]
    for key in ("lcz_oa", "oa_bu", "hse_mae"):
        assert f"{means[key]:.3f}" in markdown, (key, means[key])
    for site, agreement in fit["date_agreement"].items():
        assert f"| {site} |" in markdown and f"{agreement['teacher']:.2f}" in markdown, site
    counted = sum(a["model"] >= a["teacher"] for a in fit["date_agreement"].values())
    assert counted == fit["sites_at_or_above_teacher"]
    assert f"**{counted} of the {fit['sites']} sites**" in markdown
    reference = card["reference_agreement"]["mean"]
    assert f"{reference['model_oa']:.3f}" in markdown and f"{reference['teacher_oa']:.3f}" in markdown


def test_leave_region_out_figures_are_in_the_card(card, markdown):
    lro = card["leave_region_out"]
    for recipe in (lro["recipe"], lro["baseline_v4_recipe"]):
        for fold, means in lro[recipe]["folds"].items():
            assert f"{means['lcz_oa']:.3f}" in markdown, (recipe, fold)
