import numpy as np
import pytest

from anyecg.signal.leads import CANONICAL_LEADS, STANDARD_12, canonical_lead, lead_ids, present_mask


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("MLII", "II"), ("V5", "V5"), ("V1", "V1"), ("i", "I"), ("ii", "II"), ("avr", "aVR"), ("aVL", "aVL"),
        ("AVF", "aVF"), ("vx", "X"), ("vy", "Y"), ("vz", "Z"), ("ECG", "unknown"), ("lead II", "II"),
        ("DII", "II"), ("MV2", "V2"), ("Fp1", "unknown"), ("", "unknown"), (" v6 ", "V6"), ("Lead_aVR", "aVR"),
    ],
)
def test_aliases_seen_in_real_headers(raw, canonical):
    assert canonical_lead(raw) == canonical


def test_lead_ids_and_present_mask():
    assert lead_ids(["I", "V6", "unknown"]).tolist() == [0, 11, len(CANONICAL_LEADS) - 1]
    with pytest.raises(ValueError, match="'MLII' is not canonical"):
        lead_ids(["MLII"])
    mask = present_mask(["II", "V5"])
    assert mask.dtype == bool and mask.shape == (12,)
    assert [STANDARD_12[i] for i in np.flatnonzero(mask)] == ["II", "V5"]
