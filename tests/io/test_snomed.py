"""The SNOMED CT table covers the 2021 scored classes and every code in the real CinC 2021 headers."""

from __future__ import annotations

from anyecg.io import read_header, snomed_abbreviation, snomed_name
from anyecg.io.snomed import SCORED_2021, SCORED_EQUIVALENT, SNOMED_TABLE


def test_well_known_codes():
    expected = {
        "426783006": ("sinus rhythm", "NSR"),
        "164889003": ("atrial fibrillation", "AF"),
        "270492004": ("1st degree av block", "IAVB"),
        "59118001": ("right bundle branch block", "RBBB"),
        "164909002": ("left bundle branch block", "LBBB"),
        "426177001": ("sinus bradycardia", "SB"),
        "427084000": ("sinus tachycardia", "STach"),
        "284470004": ("premature atrial contraction", "PAC"),
        "164884008": ("ventricular ectopics", "VEB"),
        "67741000119109": ("left atrial enlargement", "LAE"),
    }
    for code, (name, abbreviation) in expected.items():
        assert (snomed_name(code), snomed_abbreviation(code)) == (name, abbreviation)
    assert snomed_name(426783006) == "sinus rhythm"  # int codes accepted


def test_unknown_code_is_returned_unchanged():
    assert snomed_name("999999999") == "999999999" and snomed_abbreviation(" 123 ") == "123"


def test_scored_set_and_equivalences():
    assert len(SCORED_2021) == 30
    assert SCORED_2021 <= set(SNOMED_TABLE)
    assert all(a in SCORED_2021 and b in SCORED_2021 for a, b in SCORED_EQUIVALENT.items())
    abbreviations = [abbreviation for _, abbreviation in SNOMED_TABLE.values()]
    assert len(abbreviations) == len(set(abbreviations))  # no abbreviation names two codes


def test_every_code_in_the_real_headers_is_known(shared_data):
    codes = set()
    for header in sorted((shared_data / "cinc2021").glob("*.hea")):
        codes.update(read_header(header).labels)
    assert len(codes) > 20
    assert codes <= set(SNOMED_TABLE), sorted(codes - set(SNOMED_TABLE))
