"""Content sniffing of clinical exports and the hardened XML parser."""

from __future__ import annotations

import pytest

from anyecg.io import RecordError, find_records, read_record
from anyecg.io.clinical import sniff_kind, xml_root_name

_BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE RestingECG [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<RestingECG><PatientDemographics><PatientID>&lol3;</PatientID></PatientDemographics></RestingECG>
"""
_EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><id root="&secret;"/></AnnotatedECG>
"""


@pytest.mark.parametrize("name, text", [("laughs.xml", _BILLION_LAUGHS), ("external.xml", _EXTERNAL_ENTITY)])
def test_entity_declarations_are_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert sniff_kind(path) == "xml"
    with pytest.raises(RecordError, match=rf"{name}: XML refused: EntitiesForbidden"):
        read_record(path)


def test_root_names_in_any_encoding():
    text = '<?xml version="1.0"?>\n<!-- a <comment> -->\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG>'
    assert xml_root_name(text.encode("latin-1")) == "RestingECG"
    assert xml_root_name(b"\xff\xfe" + "<restingecgdata>".encode("utf-16-le")) == "restingecgdata"
    assert xml_root_name(b"\xef\xbb\xbf<RestingECG>") == "RestingECG"
    assert xml_root_name('<hl7:AnnotatedECG xmlns:hl7="urn:hl7-org:v3">'.encode()) == "AnnotatedECG"
    assert xml_root_name(b"\x00\x01binary") is None


def test_unknown_xml(tmp_path):
    (tmp_path / "notes.xml").write_text("<?xml version='1.0'?><notes><note>hi</note></notes>")
    assert find_records([tmp_path]) == []  # other XML in a folder is not a record
    with pytest.raises(RecordError, match=r"notes\.xml: XML root <notes> is not an ECG format read here"):
        read_record(tmp_path / "notes.xml")


def test_empty_and_unsupported_files(tmp_path):
    (tmp_path / "empty.xml").write_bytes(b"")
    with pytest.raises(RecordError, match=r"empty\.xml: empty file \(0 bytes\)"):
        read_record(tmp_path / "empty.xml")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RecordError, match=r"notes\.txt: unsupported file type '\.txt'"):
        read_record(tmp_path / "notes.txt")
