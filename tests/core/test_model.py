"""Shapes of every variant, the parameter count of the paper configuration, P2F wiring, save/load round trip."""

import numpy as np
import pytest

from core.common.errors import UrbanMTLError
from core.network.inference import predict_batch
from core.network.model import VARIANTS, ModelConfig, build_networks, count_parameters
from core.network.saving import base_card, load_model, save_model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_of_every_variant(variant):
    train, infer = build_networks(ModelConfig(variant=variant, base_width=4))
    x = np.random.default_rng(0).random((2, 48, 40, 10), dtype=np.float32)
    out = predict_batch(infer, x)
    spec = VARIANTS[variant]
    assert set(out) == {t for t in ("hse", "lcz") if spec[t]}
    if spec["hse"]:
        assert out["hse"].shape == (2, 24, 20)
        assert np.all((out["hse"] >= 0) & (out["hse"] <= 1))
    if spec["lcz"]:
        assert out["lcz"].shape == (2, 24, 20, 17)
        np.testing.assert_allclose(out["lcz"].sum(-1), 1.0, atol=1e-5)
    assert ("hse_guide" in train.input) == spec["p2f"]


def test_parameter_count_of_the_paper_configuration():
    # Paper: "about 1.55 M". Ours: 1,546,460 in the network (+2 learned task weights in the trainer).
    # The remaining gap is rounding in the paper and Keras's biases on every convolution (kept, as in the
    # authors' Keras code, although BatchNorm follows).
    train, infer = build_networks(ModelConfig())
    assert count_parameters(infer) == 1_546_460
    assert count_parameters(train) == count_parameters(infer)


def test_p2f_uses_reference_in_training_and_prediction_at_inference():
    train, infer = build_networks(ModelConfig(base_width=4))
    x = np.random.default_rng(1).random((1, 32, 32, 10), dtype=np.float32)
    nan_guide = np.full((1, 16, 16, 1), np.nan, np.float32)
    via_nan = train({"image": x, "hse_guide": nan_guide}, training=False)
    direct = infer(x, training=False)
    np.testing.assert_allclose(np.asarray(via_nan["lcz"]), np.asarray(direct["lcz"]), atol=1e-6)
    ones = train({"image": x, "hse_guide": np.ones_like(nan_guide)}, training=False)
    assert np.abs(np.asarray(ones["lcz"]) - np.asarray(direct["lcz"])).max() > 1e-6


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    cfg = ModelConfig(base_width=4)
    _, infer = build_networks(cfg)
    path = save_model(infer, tmp_path / "model.keras", base_card(cfg, infer))
    loaded = load_model(tmp_path)  # a run folder works as well as the file
    x = np.random.default_rng(2).random((1, 32, 32, 10), dtype=np.float32)
    a, b = predict_batch(infer, x), predict_batch(loaded.network, x)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert loaded.card["variant"] == "mtl_learned_p2f" and loaded.path == path
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_model_files_are_clear_errors(tmp_path):
    with pytest.raises(UrbanMTLError, match="does not exist"):
        load_model(tmp_path / "missing.keras")
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UrbanMTLError, match="corrupt"):
        load_model(bad)
    cfg = ModelConfig(base_width=4, in_bands=4)
    _, infer = build_networks(cfg)
    save_model(infer, tmp_path / "four" / "model.keras", base_card(cfg, infer))
    with pytest.raises(UrbanMTLError, match="expects 4 input bands"):
        load_model(tmp_path / "four")
    with pytest.raises(UrbanMTLError, match="Unknown model variant"):
        ModelConfig(variant="mtl")
