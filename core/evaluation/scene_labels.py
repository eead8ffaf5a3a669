"""Per scene class of a labelled patch dataset (e.g. EuroSAT 'Residential'): how the model's maps read against
the labels (share of patches called built, mean HSE), beside the same figures for the references."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..common.lcz import BUILT_CODES


class SceneLabelTally:
    """Per scene class (e.g. EuroSAT 'Residential'): how many patches the model calls built, and their mean HSE.

    A patch is called built when most of its pixels have their most probable LCZ among 1-10. The same figures
    are kept for the references, to read the model's numbers against its labels.
    """

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, float]] = {}

    def __bool__(self) -> bool:
        return bool(self._sums)

    def add(self, labels: Iterable[str], y: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> None:
        built_low, built_high = min(BUILT_CODES), max(BUILT_CODES)
        for i, label in enumerate(labels):
            sums = self._sums.setdefault(label, {})
            sums["n"] = sums.get("n", 0) + 1
            if "lcz" in pred:
                codes = np.argmax(pred["lcz"][i], axis=-1) + 1
                built = np.mean((codes >= built_low) & (codes <= built_high)) > 0.5
                _add(sums, "built", float(built))
            if "hse" in pred:
                _add(sums, "hse", float(np.mean(pred["hse"][i])))
            reference = y.get("lcz")
            if reference is not None:
                has_ref = reference[i].sum(axis=-1) > 0
                if has_ref.any():
                    codes = np.argmax(reference[i][has_ref], axis=-1) + 1
                    _add(sums, "ref_built", float(np.mean((codes >= built_low) & (codes <= built_high)) > 0.5))
            reference = y.get("hse")
            if reference is not None and np.isfinite(reference[i]).any():
                _add(sums, "ref_hse", float(np.nanmean(reference[i])))

    def result(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for label in sorted(self._sums):
            sums = self._sums[label]
            entry: dict[str, Any] = {"n": int(sums["n"])}
            for key, name in (("built", "share_built"), ("hse", "mean_hse"),
                              ("ref_built", "reference_share_built"), ("ref_hse", "reference_mean_hse")):
                if sums.get(f"{key}_n"):
                    entry[name] = sums[key] / sums[f"{key}_n"]
            out[label] = entry
        return out


def _add(sums: dict[str, float], key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + value
    sums[f"{key}_n"] = sums.get(f"{key}_n", 0) + 1
