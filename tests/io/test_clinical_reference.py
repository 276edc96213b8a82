"""Every clinical sample file read equal to ecgdatakit, a separate implementation of these formats."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from anyecg.io import read_record
from anyecg.signal.leads import canonical_lead

ecgdatakit = pytest.importorskip("ecgdatakit")

SAMPLES = [
    "dicom_ecg/ecgtoolkit_Example.dcm", "dicom_ecg/ecg-dicom-web-viewer_test_ecg.dcm",
    "muse_xml/easyRecg_muse_ecg1.xml", "muse_xml/easyRecg_muse_ecg2.xml",
    "muse_xml/braveheart_example1.xml", "muse_xml/braveheart_example2.xml",
    "hl7_aecg/Example_aECG.xml", "hl7_aecg/FDA_minimum_aecg.xml", "hl7_aecg/liryc_hl7aecg_example.xml",
    "ishne_holter/ECG_P28.01.ecg",
    "scp_ecg/ecgtoolkit_Example.scp", "scp_ecg/welchallyn_cardiocontrol_ECG_20170504_163507_123456789.SCP",
]


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_equals_ecgdatakit(formats_dir, name):
    path = formats_dir / name
    rec = read_record(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ecgdatakit.FileParser.parse(path)
    assert reference.leads and all(lead.units == "mV" and lead.sampling_rate == rec.fs for lead in reference.leads)
    for lead in reference.leads:
        expected = np.asarray(lead.samples, dtype=np.float64)
        # ecgdatakit turns samples equal to a DICOM padding value (0 here) into NaN; compare the others
        kept = np.isfinite(expected)
        assert kept.mean() > 0.9
        row = rec.leads.index(canonical_lead(lead.label))
        np.testing.assert_allclose(rec.signal[row][kept], expected[kept], rtol=1e-6, atol=1e-6)
