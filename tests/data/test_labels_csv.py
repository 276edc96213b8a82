
import pytest

from anyecg.data.labels import LabelTable


def test_lookup_by_stem_and_relative_path(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("record,label,patient\nE07500,AF;RBBB,p1\nsite_b/E07501.hea,N,\n")
    table = LabelTable.read(csv)
    root = tmp_path / "data"
    assert table.lookup(root / "site_a" / "E07500.hea", [root]).labels == ["AF", "RBBB"]
    assert table.lookup(root / "site_a" / "E07500.hea", [root]).patient == "p1"
    assert table.lookup(root / "site_b" / "E07501.hea", [root]).labels == ["N"]
    assert table.lookup(root / "site_b" / "E07501.hea", [root]).patient is None
    assert table.lookup(root / "other.hea", [root]) is None
    assert not table.has_split


@pytest.mark.parametrize(
    "content, message",
    [
        ("rec,label\na,N\n", "needs columns 'record' and 'label'"),
        ("record,label\na,N\na,AF\n", "records listed twice"),
        ("record,label,split\na,N,training\n", "unknown split names"),
    ],
)
def test_bad_csv_names_file_and_problem(tmp_path, content, message):
    csv = tmp_path / "labels.csv"
    csv.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        LabelTable.read(csv)
    assert str(csv) in str(err.value)
