import json
import shutil

from matplotlib.image import imread

from anyecg.cli import main


def test_inspect_record_text_json_and_plot(shared_data, tmp_path, capsys):
    record = shared_data / "mitdb" / "100.hea"
    assert main(["inspect", str(record), "--json", "--plot", str(tmp_path / "ecg.png")]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[: out.rindex("}") + 1])
    assert info["fs"] == 360 and info["leads"] == ["II", "V5"] and info["age"] == 69 and info["sex"] == "M"
    assert info["annotations"]["symbols"]["N"] == 2239 and info["annotations"]["symbols"]["A"] == 33
    image = imread(tmp_path / "ecg.png")
    assert image.shape[1] > image.shape[0] > 100  # two 10 s rows of grid paper: wider than tall


def test_prepare_then_inspect_store(shared_data, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(shared_data / "cpsc2021", src)
    assert main(["prepare", str(src), "--out", str(tmp_path / "store"), "--workers", "1", "--no-progress"]) == 0
    assert "18 prepared, 0 skipped" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "store"), "--json", "--plot", str(tmp_path / "s.png")]) == 0
    info = json.loads(capsys.readouterr().out.split("\nplot:")[0])
    assert info["records"] == 18 and info["fs"] == 300
    assert sum(info["labels"].values()) == 18


def test_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "nothing.hea"
    assert main(["inspect", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_models_json_lists_every_family(capsys):
    assert main(["models", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in presets}
    assert len(by_name) == len(presets)
    assert {p["family"] for p in presets} == {"anyecg", "ecgfm", "ecgfounder", "baseline"}
    for name, paper in {"anyecg-b": 254e6, "anyecg-l": 500e6, "anyecg-xl": 1.7e9, "ecgfm-base": 90.9e6}.items():
        assert abs(by_name[name]["parameters"] / paper - 1) <= 0.05, (name, by_name[name]["parameters"])


def test_missing_optional_extra_is_a_one_line_error(monkeypatch, capsys):
    """Without the serve extra, `anyecg serve` says what to install instead of printing a traceback."""
    import sys

    from anyecg.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # importing it now raises ImportError
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anyecg serve: error:") and "anyecg[serve]" in err and "Traceback" not in err
