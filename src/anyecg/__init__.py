"""anyecg: ECG foundation models for real-world recordings.

The data path, one package per step::

    io        read any recording        -> Recording(signal[mV], fs, leads, age, sex, labels, ...)
    signal    pure preprocessing        -> band-pass, notch, 300 Hz, db6 denoising, patches
    data      the prepared store        -> sharded signals + manifest, splits, datasets
    models    tokenizer, backbones      -> AnyECG, ECG-FM, ECGFounder, baselines
    training  one loop for every stage
    tasks     downstream tasks
    evaluation metrics, reports, plots
"""

__version__ = "0.1.0"
