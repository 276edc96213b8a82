"""ECG-FM and ECGFounder pretrained on a real store through the shared loop, then loaded and used."""

import numpy as np
import pytest

from anyecg.families import FamilyModel, pretrain_family
from anyecg.io import read_record
from anyecg.training.loop import TrainConfig


@pytest.fixture(scope="module", params=[("ecgfm", "ecgfm-tiny"), ("ecgfounder", "ecgfounder-tiny")], ids=["ecgfm", "ecgfounder"])
def run(request, small_store, tmp_path_factory):
    family, preset = request.param
    out = tmp_path_factory.mktemp(family)
    metrics = pretrain_family(family, small_store, preset, out,
                              TrainConfig(max_steps=4, batch_size=4, warmup_steps=1, save_every=4, log_every=2))
    assert np.isfinite(metrics["loss"])
    return family, out


def test_from_pretrained_embeds_one_and_twelve_leads(run, shared_data):
    family, out = run
    model = FamilyModel.from_pretrained(out)
    assert model.family == family
    cinc = read_record(shared_data / "cinc2021" / "E07500.hea")
    twelve = model.embed(cinc.signal, cinc.fs, cinc.raw_leads)
    mit = read_record(shared_data / "mitdb" / "100.hea")
    one = model.embed(mit.signal[:1, : 360 * 25], 360, ["MLII"], per_window=True)
    # 25 s: five 5 s ECG-FM windows; two 10 s ECGFounder windows and a 5 s tail (half a window: kept)
    assert twelve.ndim == 1 and np.isfinite(twelve).all()
    assert one.shape == ({"ecgfm": 5, "ecgfounder": 3}[family], twelve.shape[0]) and np.isfinite(one).all()
    if family == "ecgfounder":
        assert model.vocabulary is not None and len(model.vocabulary.classes) == model.network.config.num_classes


def test_save_pretrained_round_trip(run, shared_data, tmp_path):
    family, out = run
    model = FamilyModel.from_pretrained(out)
    model.save_pretrained(tmp_path / "copy")
    again = FamilyModel.from_pretrained(tmp_path / "copy")
    record = read_record(shared_data / "cinc2021" / "E07502.hea")
    np.testing.assert_array_equal(model.embed(record.signal, record.fs, record.leads),
                                  again.embed(record.signal, record.fs, record.leads))


def test_cli_pretrain_family_and_errors(small_store, tmp_path, capsys):
    from anyecg.cli import main

    out = tmp_path / "fm"
    assert main(["pretrain", "--family", "ecgfm", "--data", str(small_store), "--out", str(out), "--preset", "ecgfm-tiny",
                 "--steps", "2", "--batch-size", "2", "--save-every", "2"]) == 0
    assert (out / "final" / "model.safetensors").is_file()
    assert main(["pretrain", "--family", "ecgfm", "--data", str(small_store), "--out", str(tmp_path / "x"),
                 "--preset", "anyecg-b", "--steps", "1"]) == 2
    assert "unknown ECG-FM preset 'anyecg-b'" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(small_store), "--out", str(tmp_path / "y"), "--steps", "1"]) == 2
    assert "needs --tokenizer" in capsys.readouterr().err
