"""The MIT-BIH inter-patient AAMI beat benchmark on the full DS2, end to end through the CLI.

    python benchmarks/aami_beats.py --out runs/aami [--data PATH] [--store STORE] [--models ...] [--seeds N]

Prepares every MIT-BIH record in `--data/mitdb` (or reuses `--store`), then for each model runs
`anyecg finetune --task beats --data store --out runs/MODEL --seeds N` with the CLI defaults: train
on DS1 (a fifth of its patients held out as validation to choose the epoch), test once on all
49,705 N/S/V/F beats of DS2 (de Chazal et al. 2004; Q beats left out and counted). Models:
- `xresnet1d-tiny`, `anyecg`, `anyecg-random-init`: with each beat's RR-interval features and its
  template features (shape against the record's median beat) joined to the network's (the default);
- `*-no-rr`: the same without the RR features, an ablation.
Published anchors (same protocol, DS1 -> DS2): accuracy 0.862 (de Chazal et al. 2004, linear
discriminants on RR and morphology features) and 0.945 (Mondejar-Guerra et al. 2019, an ensemble of
SVMs on RR, wavelet, HOS and LBP features of both leads).

Measured with the CLI defaults, which join each beat's RR-interval features and its shape against
its record's median beat (2-core CPU, one thread per run, three or four runs side by side; 5
seeds): accuracy 0.945 +/- 0.005 for `xresnet1d-tiny` (V F1 0.94, S F1 0.23; 64 min; ensemble
0.949, V F1 0.96), 0.935 +/- 0.003 for AnyECG pretrained (V F1 0.92, S F1 0.13; 31 min; ensemble
0.947, V F1 0.95), 0.943 +/- 0.007 for AnyECG random init (V F1 0.92;
43 min; ensemble 0.950, V F1 0.94). Published anchors above; docs/results.md, section 5.

Measured before the template features, with RR-interval features only (the same as
`--extra --no-template-features`; two runs side by side; 5 seeds, 3 for the ablations):
accuracy 0.919 +/- 0.019 for `xresnet1d-tiny` (V F1 0.77, S F1 0.31; 42 min), 0.920 +/- 0.009 for
AnyECG pretrained (V F1 0.77; about 10 min a seed; the checkpoint shipped before it: 0.912 +/- 0.023,
V F1 0.76), 0.924 +/- 0.011 for AnyECG random init (V F1 0.80; 20 min); without RR features 0.887
+/- 0.015 (`xresnet1d-tiny`) and 0.883 +/- 0.053 (AnyECG, the previous checkpoint). Seeds'
ensembles: 0.934 / 0.934 / 0.947 (V F1 0.84 / 0.84 / 0.91; AnyECG's through the CLI, the others
from the seeds' predictions before the CLI made ensembles).

The last line printed is one JSON object: per model, mean +/- std over seeds of accuracy, macro F1
and F1 / sensitivity / positive predictive value per class, the epochs kept, and the wall time;
and the same figures for the run's seed ensemble (`finetune` with several seeds: their DS2 class
probabilities averaged; `anyecg evaluate --model RUN` and `predict` use it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from anyecg.evaluation.metrics import to_jsonable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_quality import DEFAULT_DATA, run  # noqa: E402  (the shared CLI runner)

MODELS = {
    "xresnet1d-tiny": ["--baseline", "xresnet1d-tiny"],
    "anyecg": [],  # the shipped AnyECG, pretrained
    "anyecg-random-init": ["--random-init"],
    "xresnet1d-tiny-no-rr": ["--baseline", "xresnet1d-tiny", "--no-rr-features"],
    "anyecg-no-rr": ["--no-rr-features"],
}
ANCHORS = {"de Chazal et al. 2004": {"accuracy": 0.862}, "Mondejar-Guerra et al. 2019": {"accuracy": 0.945}}


def headline(metrics: dict, classes: list[str]) -> dict:
    per_class = {name: {key: metrics["per_class"][name][key] for key in ("f1", "sensitivity", "ppv")} for name in classes}
    return {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"], "per_class": per_class}


def model_result(summary: dict, seconds: float) -> dict:
    classes = summary["classes"]
    result = {"wall_s": round(seconds, 1), **headline(summary["metrics"], classes), "fits": summary["fits"]}
    if summary.get("ensemble"):  # several seeds: the run's seed ensemble, scored on DS2 once
        result["ensemble"] = headline(summary["ensemble"]["test"], classes)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--store", type=Path, help="an already prepared MIT-BIH store (default: prepare one in --out)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["xresnet1d-tiny", "anyecg", "anyecg-random-init"],
                        choices=sorted(MODELS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more finetune options for every model")
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "anyecg.cli"]
    args.out.mkdir(parents=True, exist_ok=True)
    store, prepare_s = args.store, None
    if store is None:
        store = args.out / "store"
        prepare_s = round(run([*cli, "prepare", str(args.data / "mitdb"), "--out", str(store), "--workers", "1",
                               "--no-progress"], args.out / "prepare.log"), 1)
    result = {"store": str(store), "prepare_s": prepare_s, "seeds": args.seeds, "anchors": ANCHORS,
              "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "models": {}}
    for name in args.models:
        out = args.out / "runs" / name
        seconds = run([*cli, "finetune", "--task", "beats", "--data", str(store), "--out", str(out),
                       "--seeds", str(args.seeds), *MODELS[name], *args.extra], args.out / f"{name}.log")
        summary = json.loads((out / "summary.json").read_text())
        result["models"][name] = to_jsonable(model_result(summary, seconds))
        result.setdefault("records", {key: summary[f"{key}_records"] for key in ("train", "val", "test")})
        print(json.dumps({name: result["models"][name]}), flush=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
