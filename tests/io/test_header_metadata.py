"""Header metadata on real records (values checked by hand against the .hea files) and edge cases."""

from __future__ import annotations

import pytest

from anyecg.io import read_header, read_record
from anyecg.io.metadata import parse_age, parse_comments, parse_sex, patient_id_for


def test_mitdb_age_sex_and_shared_patient(shared_data):
    rec = read_record(shared_data / "mitdb" / "100")  # "# 69 M 1085 1629 x1"
    assert (rec.age, rec.sex, rec.labels, rec.patient_id) == (69.0, "M", [], None)
    assert rec.meta["comments"][1] == "Aldomet, Inderal"
    unknown_age = read_header(shared_data / "mitdb" / "103")  # "# -1 M 742 654 x1"
    assert (unknown_age.age, unknown_age.sex) == (None, "M")
    assert read_header(shared_data / "mitdb" / "208").sex == "F"  # "# 23 F 2546 N/A x1"
    # MIT-BIH: records 201 and 202 come from the same patient
    assert read_header(shared_data / "mitdb" / "201").patient_id == "201"
    assert read_header(shared_data / "mitdb" / "202").patient_id == "201"


def test_cinc2021_challenge_fields(shared_data):
    rec = read_record(shared_data / "cinc2021" / "E07500")
    assert (rec.age, rec.sex) == (78.0, "M")
    assert rec.labels == ["67741000119109", "426177001"]
    assert rec.meta["fields"]["Rx"] == "Unknown"
    other = read_header(shared_data / "cinc2021" / "JS20000")  # Age 84, Female, 4 codes
    assert (other.age, other.sex, other.labels) == (84.0, "F", ["284470004", "427084000", "698252002", "55930002"])
    assert read_header(shared_data / "cinc2021" / "HR06000").meta["units"][0] == "mv"  # lower-case unit kept


def test_ptb_lower_case_fields_and_diagnosis(shared_data, copy_record):
    rec = read_record(shared_data / "ptbdb" / "s0010_re")
    assert (rec.age, rec.sex) == (81.0, "F")
    assert rec.meta["diagnosis"] == "Myocardial infarction"
    assert rec.meta["fields"]["Acute infarction (localization)"] == "infero-latera"
    assert rec.patient_id is None  # not inside a patientNNN folder here
    moved = copy_record(shared_data / "ptbdb" / "s0010_re.hea", folder="ptb/patient001")
    assert read_header(moved).patient_id == "patient001"


@pytest.mark.parametrize(
    "record, label, patient",
    [
        ("data_101_6", "paroxysmal atrial fibrillation", "101"),
        ("data_21_7", "non atrial fibrillation", "21"),
        ("data_84_1", "persistent atrial fibrillation", "84"),
    ],
)
def test_cpsc2021_class_comment_and_patient(shared_data, record, label, patient):
    info = read_header(shared_data / "cpsc2021" / record)
    assert (info.labels, info.patient_id, info.age, info.sex) == ([label], patient, None, None)


def test_age_and_sex_edge_cases():
    assert [parse_age(text) for text in ["78", "NaN", "?", "-1", "n/a", "", "300", "4.5"]] == [
        78.0, None, None, None, None, None, None, 4.5
    ]
    assert [parse_sex(text) for text in ["Male", "female", "M", "f", "Unknown", ""]] == ["M", "F", "M", "F", None, None]
    meta = parse_comments(["Age: NaN", "Sex: Unknown", "Dx: 426783006, 164889003,", "Rx: Unknown"])
    assert (meta.age, meta.sex, meta.labels) == (None, None, ["426783006", "164889003"])
    assert parse_comments(["? F 1000 1000 x1"]).age is None  # MIT-BIH style, unknown age


def test_patient_id_rules():
    assert patient_id_for("202", None, ["68 M 1960 2851 x1"]) == "201"
    assert patient_id_for("202", None, ["Age: 50"]) is None  # a 202 from another database
    assert patient_id_for("data_8_3", None) == "8"
    assert patient_id_for("data_00014", None) is None  # CPSC 2019 naming, one record per file
