"""Every model preset of every family, for `anyecg models`."""

from __future__ import annotations

from typing import Any

from anyecg.models import baselines, ecgfm, ecgfounder, presets


def list_all_presets() -> list[dict[str, Any]]:
    """AnyECG, ECG-FM, ECGFounder and the downstream baselines: name, family, parameters, ..."""
    return presets.list_presets() + ecgfm.list_presets() + ecgfounder.list_presets() + baselines.list_presets()
