"""Comparing a state dict with the one a network expects, for loaders that must fill every tensor."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def state_mismatches(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, misshaped) names of `given` against `expected` (a network's state_dict),
    each sorted; all three empty when `given` fills `expected` exactly."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = sorted(k for k in set(given) & set(expected) if given[k].shape != expected[k].shape)
    return missing, unexpected, misshaped
