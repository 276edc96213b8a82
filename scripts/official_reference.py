"""Write the fixtures that prove anyecg's converters of the published ECG-FM and ECGFounder checkpoints.

    python scripts/official_reference.py --fairseq-signals CHECKOUT --ecgfounder CHECKOUT --ecgfm-repo CHECKOUT \\
        [--data ../shared/data] [--out tests/models/published]

Runs the authors' own code, imported from the checkouts given (github.com/Jwoo5/fairseq-signals,
github.com/PKUDigitalHealth/ECGFounder; github.com/bowang-lab/ECG-FM for its label list and its
notebook's per-label aggregation), in an environment where it imports: fairseq-signals needs
Python 3.10 (its dataclass configs fail on 3.11), `hydra-core<1.1`, `omegaconf<2.1` and
`transformers<4.46`; ECG-FM's notebook pipeline needs `ecg-transform==0.1.3`. ECGFounder's
`dataset.py` imports torchvision at the top without using it, so an empty stand-in module is
registered for that import.

It builds official models of small configurations with every tensor random (norm layers too; the
BatchNorm layers Net1D builds but never runs keep their initial values, as in a real checkpoint),
saves them in the official file formats, and on real recordings saves:
- ECGFounder: `util.filter_bandpass` + the datasets' `z_score_normalization` output (every 25th
  sample) and `Net1D` logits of the 12-lead and lead-I models (`.pth`, `{"state_dict"}`, the
  12-lead file with `module.` names);
- ECG-FM: fairseq-signals' `resample` + `lead_std_divide` + `segment_mat` output and ECG-FM's
  notebook transforms, the pretrained model's features and the fine-tuned model's logits and
  per-label aggregated probabilities, both models loaded back with
  `fairseq_signals.models.build_model_from_checkpoint` (the pretrained file with
  `parametrizations.weight.original0/1`, the fine-tuned one with `weight_g`/`weight_v` names);
- the full-size official key/shape tables (`full_size_keys.json`).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import wfdb

ECGFOUNDER_RECORDS = ["E07500", "HR06000", "JS20000"]  # CinC 2021: 12 leads, 500 Hz, 10 s
ECGFM_RECORDS = ["E07501", "JS20001"]
MITDB_RECORD, MITDB_SECONDS = "100", 12  # 2 leads at 360 Hz: the resampling path
PTBXL_RECORD = "records250/00009"  # 12 leads at 250 Hz: ECGFounder's resampling path
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def randomize(module: torch.nn.Module, generator: torch.Generator, keep=lambda name: False) -> None:
    """Every floating tensor drawn at random (weights ~ N(0, 1/fan_in), vectors around their usual values)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or keep(name):
                continue
            if tensor.dim() >= 2:
                fan_in = math.prod(tensor.shape[1:])
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
            elif name.endswith(("weight", "original0", "weight_g")):
                tensor.copy_(1.0 + 0.3 * torch.randn(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))


def read_cinc(data: Path, record: str) -> np.ndarray:
    """float64 [12, T] in mV, standard lead order, as the authors' datasets read it (`wfdb.rdsamp`)."""
    signal, fields = wfdb.rdsamp(str(data / "cinc2021" / record))
    assert fields["sig_name"] == LEADS and fields["fs"] == 500, (record, fields["sig_name"], fields["fs"])
    return np.nan_to_num(signal.T, nan=0)


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# ECGFounder


def ecgfounder_reference(root: Path, data: Path, out: Path, arrays: dict, tables: dict) -> None:
    stand_in = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms")}
    sys.modules.update(stand_in)
    sys.path.insert(0, str(root))
    import dataset as founder_dataset  # noqa: E402

    for name in stand_in:  # only for that import (transformers, imported later, probes torchvision)
        del sys.modules[name]
    from net1d import Net1D  # noqa: E402
    from scipy.interpolate import interp1d  # noqa: E402
    from util import filter_bandpass  # noqa: E402

    founder_dataset.interp1d = interp1d  # used by resample_unequal, never imported in dataset.py
    z_score = founder_dataset.LVEF_12lead_cls_Dataset.z_score_normalization
    resample_unequal = founder_dataset.LVEF_12lead_cls_Dataset.resample_unequal

    generator = torch.Generator().manual_seed(12)
    published = dict(ratio=1, stride=2, use_bn=False, use_do=False, verbose=False)
    models = {
        "ecgfounder_12lead": Net1D(in_channels=12, base_filters=8, filter_list=[8, 16, 24], m_blocks_list=[1, 2, 1],
                                   kernel_size=8, groups_width=8, n_classes=150, **published),
        "ecgfounder_1lead": Net1D(in_channels=1, base_filters=4, filter_list=[4, 8], m_blocks_list=[1, 2],
                                  kernel_size=8, groups_width=4, n_classes=150, **published),
    }
    for name, model in models.items():
        randomize(model, generator, keep=lambda key: ".bn" in key or key.startswith("first_bn."))
        model.eval()
        state = model.state_dict()
        if name == "ecgfounder_12lead":  # saved from DataParallel
            state = {"module." + key: value for key, value in state.items()}
        torch.save({"state_dict": state}, out / f"{name}.pth")

    for record in ECGFOUNDER_RECORDS:
        raw = read_cinc(data, record)
        clean = z_score(None, filter_bandpass(raw, 500))  # [12, 5000]
        arrays[f"ecgfounder/{record}/preprocessed_every_25th"] = clean[:, ::25]
        lead_i = z_score(None, filter_bandpass(raw[:1], 500))  # [1, 5000]
        with torch.no_grad():
            arrays[f"ecgfounder_12lead/{record}/logits"] = models["ecgfounder_12lead"](torch.FloatTensor(clean)[None])[0].numpy()
            arrays[f"ecgfounder_1lead/{record}/logits"] = models["ecgfounder_1lead"](torch.FloatTensor(lead_i)[None])[0].numpy()
    # A 10 s record at another rate: their linear interpolation onto 5000 samples.
    ptbxl = np.load(data / "ptbxl" / f"{PTBXL_RECORD}.npy").astype(np.float64)  # [12, 2500] at 250 Hz
    arrays["ecgfounder/ptbxl_resampled_every_25th"] = resample_unequal(None, ptbxl, 250, 5000)[:, ::25]

    full = Net1D(in_channels=12, base_filters=64, filter_list=[64, 160, 160, 400, 400, 1024, 1024],
                 m_blocks_list=[2, 2, 2, 3, 3, 4, 4], kernel_size=16, groups_width=16, n_classes=150, **published)
    tables["ecgfounder_12lead"] = shapes(full)


# ---------------------------------------------------------------------------------------------
# ECG-FM

SMALL_ECGFM = dict(
    encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
    conv_feature_layers="[(8, 2, 2)] * 4", conv_pos=8, conv_pos_groups=2, in_d=12,
)


def fairseq_checkpoint(model: torch.nn.Module, model_cfg: dict, weight_norm_names: str) -> dict:
    """A checkpoint laid out as fairseq-signals' trainer saves it."""
    state = model.state_dict()
    if weight_norm_names == "weight_g":  # the naming of checkpoints written before torch's parametrizations
        rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
        state = {next((key.replace(a, b) for a, b in rename.items() if a in key), key): value for key, value in state.items()}
    return {
        "args": None,
        "cfg": {"model": model_cfg, "task": {"_name": "ecg_pretraining" if model_cfg["_name"] == "wav2vec2_cmsc" else "ecg_classification"},
                "common": {"seed": 1}},
        "model": state,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "BinaryCrossEntropyCriterion", "optimizer_name": "Adam",
                               "lr_scheduler_state": {"best": 0.5}, "num_updates": 10}],
        "task_state": {},
        "extra_state": {"epoch": 2, "val_loss": 0.5},
        "last_optimizer_state": {},
    }


def ecgfm_reference(root: Path, ecgfm_repo: Path, data: Path, out: Path, arrays: dict, tables: dict) -> None:
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "scripts" / "preprocess" / "ecg"))
    import pandas as pd  # noqa: E402
    from ecg_transform.inp import ECGInput, ECGInputSchema  # noqa: E402
    from ecg_transform.sample import ECGMetadata, ECGSample  # noqa: E402
    from ecg_transform.t.common import HandleConstantLeads, LinearResample, ReorderLeads  # noqa: E402
    from ecg_transform.t.cut import SegmentNonoverlapping  # noqa: E402
    from ecg_transform.t.scale import Standardize  # noqa: E402
    from omegaconf import OmegaConf  # noqa: E402
    from preprocess import lead_std_divide, resample, segment_mat  # noqa: E402
    from scipy.io import loadmat, savemat  # noqa: E402

    import fairseq_signals  # noqa: E402,F401
    from fairseq_signals.models import build_model_from_checkpoint  # noqa: E402
    from fairseq_signals.models.classification.ecg_transformer_classifier import (  # noqa: E402
        ECGTransformerClassificationConfig,
        ECGTransformerClassificationModel,
    )
    from fairseq_signals.models.ecg_transformer import ECGTransformerModel  # noqa: E402
    from fairseq_signals.models.wav2vec2.wav2vec2_cmsc import Wav2Vec2CMSCConfig, Wav2Vec2CMSCModel  # noqa: E402

    def plain(cfg, name: str) -> dict:
        """cfg["model"] as the trainer stores it: resolved against the task config, plain containers."""
        task = {"normalize": False, "filter": False, "data": "manifests"}
        full = OmegaConf.create({"task": task, "model": OmegaConf.structured(cfg)})
        return {**OmegaConf.to_container(full, resolve=True, enum_to_str=True)["model"], "_name": name}

    generator = torch.Generator().manual_seed(5)
    pre_cfg = Wav2Vec2CMSCConfig(**SMALL_ECGFM, final_dim=8, latent_vars=8, latent_groups=2, quantize_targets=True,
                                 apply_mask=True, mask_prob=0.65)
    pretrained = Wav2Vec2CMSCModel(pre_cfg)
    randomize(pretrained, generator)
    torch.save(fairseq_checkpoint(pretrained, plain(pre_cfg, "wav2vec2_cmsc"), "parametrizations"), out / "ecgfm_pretrained.pt")
    ft_cfg = ECGTransformerClassificationConfig(**SMALL_ECGFM, num_labels=17, no_pretrained_weights=True)
    finetuned = ECGTransformerClassificationModel(ft_cfg, ECGTransformerModel(ft_cfg))
    randomize(finetuned, generator)
    torch.save(fairseq_checkpoint(finetuned, plain(ft_cfg, "ecg_transformer_classifier"), "weight_g"), out / "ecgfm_finetuned.pt")
    # The authors' loading path, from the files just written.
    pretrained = build_model_from_checkpoint(str(out / "ecgfm_pretrained.pt")).eval()
    finetuned = build_model_from_checkpoint(str(out / "ecgfm_finetuned.pt")).eval()

    label_def = pd.read_csv(ecgfm_repo / "data/mimic_iv_ecg/labels/label_def.csv", index_col="name")
    labels = label_def.index.to_list()
    notebook = json.loads((ecgfm_repo / "notebooks/infer_quickstart.ipynb").read_text())
    agg_cell = next("".join(c["source"]) for c in notebook["cells"] if "AGG_METHODS = {" in "".join(c["source"]))
    agg_methods = ast.literal_eval(agg_cell[agg_cell.index("{"): agg_cell.index("}") + 1])  # the notebook's dict
    schema = ECGInputSchema(sample_rate=500, expected_lead_order=LEADS, required_num_samples=2500)
    transforms = [ReorderLeads(expected_order=LEADS, missing_lead_strategy="raise"), LinearResample(desired_sample_rate=500),
                  HandleConstantLeads(strategy="zero"), Standardize(), SegmentNonoverlapping(segment_length=2500)]

    def fairseq_segments(feats: np.ndarray, fs: float) -> np.ndarray:
        """fairseq-signals' pipeline: resample, standardize (constant leads zero), 5 s segments."""
        feats = resample(feats, fs, 500)
        feats = feats - feats.mean(axis=1, keepdims=True)
        feats, _ = lead_std_divide(feats, constant_lead_strategy="zero")
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "record.mat")
            savemat(path, {"feats": feats, "curr_sample_rate": 500})
            files = segment_mat({"path": path, "save_path": path}, 5, 500)
            return np.stack([loadmat(f)["feats"] for f in files])  # [S, 12, 2500]

    for record in ECGFM_RECORDS:
        raw = read_cinc(data, record)
        segments = fairseq_segments(raw, 500)
        arrays[f"ecgfm/{record}/segments_every_25th"] = segments[..., ::25]
        metadata = ECGMetadata(sample_rate=500, num_samples=raw.shape[1], lead_names=LEADS, unit=None,
                               input_start=0, input_end=raw.shape[1])
        sample = ECGSample(ECGInput(raw.copy(), metadata), schema, transforms)
        arrays[f"ecgfm/{record}/notebook_segments_every_25th"] = np.asarray(sample.out)[..., ::25]
        source = torch.from_numpy(segments).float()
        with torch.no_grad():
            x = pretrained.extract_features(source, padding_mask=None)["x"]  # [S, N, D]
            out = finetuned(source=source)
        arrays[f"ecgfm_pretrained/{record}/features"] = x.numpy()
        arrays[f"ecgfm_pretrained/{record}/pooled"] = torch.div(x.sum(dim=1), (x != 0).sum(dim=1)).numpy()
        arrays[f"ecgfm_finetuned/{record}/logits"] = out["out"].numpy()
        pred = pd.DataFrame(torch.sigmoid(out["out"]).numpy(), columns=labels, index=[record] * len(source))
        arrays[f"ecgfm_finetuned/{record}/aggregated"] = pred.groupby(pred.index).agg(agg_methods)[labels].to_numpy()[0]

    # Resampling of a 2-lead 360 Hz record (the functions work lead by lead).
    mit, _ = wfdb.rdsamp(str(data / "mitdb" / MITDB_RECORD), sampto=MITDB_SECONDS * 360)
    feats = resample(mit.T, 360, 500)
    feats = feats - feats.mean(axis=1, keepdims=True)
    arrays["ecgfm/mitdb_standardized_every_25th"] = lead_std_divide(feats, constant_lead_strategy="zero")[0][:, ::25]

    full_pre = Wav2Vec2CMSCModel(Wav2Vec2CMSCConfig(quantize_targets=True, apply_mask=True, final_dim=256))
    tables["ecgfm_pretrained"] = shapes(full_pre)
    tables["ecgfm_pretrained_cfg"] = plain(Wav2Vec2CMSCConfig(quantize_targets=True, apply_mask=True, final_dim=256), "wav2vec2_cmsc")
    full_cfg = ECGTransformerClassificationConfig(num_labels=17, no_pretrained_weights=True)
    tables["ecgfm_finetuned"] = shapes(ECGTransformerClassificationModel(full_cfg, ECGTransformerModel(full_cfg)))
    tables["ecgfm_finetuned_cfg"] = plain(full_cfg, "ecg_transformer_classifier")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fairseq-signals", required=True, type=Path, help="checkout of github.com/Jwoo5/fairseq-signals")
    parser.add_argument("--ecgfounder", required=True, type=Path, help="checkout of github.com/PKUDigitalHealth/ECGFounder")
    parser.add_argument("--ecgfm-repo", required=True, type=Path, help="checkout of github.com/bowang-lab/ECG-FM (labels, notebook)")
    parser.add_argument("--data", default=Path("../shared/data"), type=Path)
    parser.add_argument("--out", default=Path("tests/models/published"), type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    arrays: dict[str, np.ndarray] = {}
    tables: dict[str, dict] = {}
    ecgfounder_reference(args.ecgfounder, args.data, args.out, arrays, tables)
    ecgfm_reference(args.fairseq_signals, args.ecgfm_repo, args.data, args.out, arrays, tables)
    np.savez_compressed(args.out / "official_outputs.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    (args.out / "full_size_keys.json").write_text(json.dumps(tables, indent=0, sort_keys=True))
    for path in sorted(args.out.iterdir()):
        print(f"{path.stat().st_size / 1024:8.1f} KiB  {path}")


if __name__ == "__main__":
    main()
