"""The `anyecg` command: parses arguments, then calls the library. No logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from anyecg import __version__


def _lead_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="read recordings of any supported format into a prepared store")
    p.add_argument("sources", nargs="+", help="folders (searched recursively), globs or record files")
    p.add_argument("--out", required=True, type=Path, help="store folder (created; a rerun resumes it)")
    p.add_argument("--labels", type=Path, help="CSV with columns record,label[,patient][,split]")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--records-per-shard", type=int, help="default: enough shards to keep every worker busy")
    p.add_argument("--fs", type=float, help="sampling rate for formats that carry none (.npy, .csv, plain .mat)")
    p.add_argument("--leads", type=_lead_list, help="comma-separated lead names for formats that carry none")
    p.add_argument("--channels", type=_lead_list,
                   help="comma-separated channels to keep, or 'all' (default: ECG channels, by units and name)")
    p.add_argument("--annotator", default="atr", help="WFDB annotation files to store: their extension (default atr)")
    p.add_argument("--mains", type=float, choices=[50.0, 60.0], default=50.0, help="mains frequency for the notch")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    p.add_argument("--no-progress", action="store_true")


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a record file or a prepared store holds")
    p.add_argument("path", type=Path)
    p.add_argument("--fs", type=float, help="sampling rate for formats that carry none")
    p.add_argument("--leads", type=_lead_list, help="lead names for formats that carry none")
    p.add_argument("--plot", type=Path, help="draw the ECG on standard grid paper to this PNG")
    p.add_argument("--record", default=None, help="for a store: which record to plot (default: the first)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds to plot")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job end to end on the embedded real recordings")
    p.add_argument("--out", type=Path, default=Path("anyecg-demo"), help="output folder (report.html, metrics.json)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes for preparing the store")
    p.add_argument("--quick", action="store_true", help="a few steps per stage and one seed: checks the pipeline in a minute")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the demo's models are small)")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="prepared store (anyecg prepare)")
    p.add_argument("--preset", default=None, help="model preset (see `anyecg models`; default: the family's -small)")
    p.add_argument("--out", required=True, type=Path, help="run folder (a rerun resumes from its last checkpoint)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (all processes, all accumulation steps)")
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 1e-4 for the tokenizer, 5e-4 for stage 2; the shipped anyecg-small "
                        "trained its tokenizer at 1e-3, see docs/pretraining.md)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model across processes (FSDP)")
    p.add_argument("--window-seconds", type=int, default=None,
                   help="longest training window (default: what the 1024-token budget allows per lead count)")


def _add_health_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--health-every", type=int, default=None,
                   help="AnyECG: health figures on held-out records every N steps and at the end, to health.jsonl "
                        "and health.png in --out (default: --save-every when the store has val/test records; 0: off)")
    p.add_argument("--health-records", type=int, default=200, help="held-out (and train) records the figures read")
    p.add_argument("--health-data", type=Path, default=None,
                   help="store whose val/test records the figures use (default: --data; same preprocessing recipe)")
    p.add_argument("--health-probe", type=Path, default=None,
                   help="a labelled store (train/val/test): add a linear probe's val macro AUROC to the figures")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain-tokenizer", help="stage 1: train the ECG tokenizer (rhythm codebook)")
    _add_train_options(p)
    _add_health_options(p)
    p = sub.add_parser("pretrain", help="AnyECG stage 2 (masked rhythm codes, frozen tokenizer), or ECG-FM / ECGFounder")
    _add_train_options(p)
    _add_health_options(p)
    p.add_argument("--family", choices=["anyecg", "ecgfm", "ecgfounder"], default="anyecg",
                   help="anyecg: stage 2 (needs --tokenizer); ecgfm: self-supervised; ecgfounder: supervised multi-label")
    p.add_argument("--tokenizer", type=Path, help="AnyECG stage-1 run folder")


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="adapt a pretrained model (or train a baseline) for a task, over several seeds")
    p.add_argument("--task", choices=["classify", "anomaly", "arrhythmia", "beats", "leadgen", "longecg"], required=True,
                   help="classify: the store's own labels (one per record, or ';'-separated: multi-label); anomaly, "
                        "arrhythmia: presets on SNOMED codes / rhythm names; beats: MIT-BIH AAMI beat classes, DS1 -> DS2")
    p.add_argument("--data", required=True, type=Path, help="prepared store; labels from its manifest")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", help="AnyECG, ECG-FM or ECGFounder checkpoint folder, a published checkpoint file, "
                   "or hf://OWNER/REPO/FILE (default: the AnyECG model shipped in the package)")
    p.add_argument("--baseline", help="train this baseline preset instead (see `anyecg models`)")
    p.add_argument("--random-init", action="store_true", help="AnyECG encoder with random weights (control)")
    p.add_argument("--linear-probe", action="store_true", help="freeze the encoder, train only the head")
    p.add_argument("--seeds", type=int, default=None,
                   help="default: 1 for classify/anomaly/arrhythmia (use 5 for benchmarks), 5 for the other tasks")
    p.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training labels (per class)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default 200); classify/anomaly/arrhythmia/beats train by epochs, this caps their steps")
    p.add_argument("--max-epochs", type=int, default=30, help="classify/anomaly/arrhythmia/beats: most epochs per seed")
    p.add_argument("--patience", type=int, default=6, help="classify/.../beats: stop after this many epochs without a better val score")
    p.add_argument("--budget-minutes", type=float, help="classify/.../beats: wall-time budget per seed; the learning rate anneals over the epochs it holds, and training stops before overrunning it")
    p.add_argument("--ema-epochs", type=float, default=None,
                   help="classify/.../beats: validate and keep a moving average of the weights over about a ninth of "
                        "the steps so far, at most this many epochs of steps; 0: the last step's weights "
                        "(default: 2 for classify/anomaly/arrhythmia, 0 for beats)")
    p.add_argument("--drop-path", type=float, default=0.0,
                   help="classify/anomaly/arrhythmia, AnyECG encoders: stochastic depth, the rate at which the last "
                        "transformer block is skipped per recording while training (earlier blocks less; default 0)")
    p.add_argument("--leads", type=_lead_list, default=[],
                   help="classify/...: read a store lead as another, e.g. I (the single unnamed lead is lead I) or MLII=II")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--input-leads", type=_lead_list, default=["II"], help="leadgen: leads the model reads")
    p.add_argument("--target-leads", type=_lead_list, default=["V1"], help="leadgen: leads it reconstructs")
    p.add_argument("--corruption", choices=["missing", "noise"], default="missing",
                   help="leadgen: target leads absent from the input, or present but noise-corrupted")
    p.add_argument("--noise-snr-db", type=float, default=0.0, help="leadgen noise: SNR of the corrupted leads")
    p.add_argument("--noise-wander", type=float, default=0.5, help="leadgen noise: baseline wander share of its power")
    p.add_argument("--noise-bursts", type=float, default=0.0, help="leadgen noise: electrode-motion burst share")
    p.add_argument("--noise-seed", type=int, default=0, help="leadgen noise: seed of the fixed evaluation corruption")
    p.add_argument("--max-beats-per-record", type=int, help="beats: a seeded subset of each record's beats (CPU runs)")
    p.add_argument("--rr-features", action=argparse.BooleanOptionalAction, default=True,
                   help="beats: join each beat's RR-interval features to the network's before the head; "
                        "classify/anomaly/arrhythmia: each record's RR-interval (heart-rate variability) and beat-shape "
                        "(ectopic beats, P waves) features")
    p.add_argument("--template-features", action=argparse.BooleanOptionalAction, default=True,
                   help="beats: join each beat's shape against its record's median beat (correlation, size ratios) too")
    p = sub.add_parser("evaluate", help="score a fine-tuned model on a split: metrics.json, predictions.csv, plots")
    p.add_argument("--model", required=True, type=Path, help="fine-tuned model: its seed-K/final, or a finetune run folder (a classify/anomaly/arrhythmia/beats "
                   "run of several seeds: their ensemble)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, type=Path)


def _given(**options) -> dict:
    """The options given on the command line; the others keep their task's default."""
    return {name: value for name, value in options.items() if value is not None}


def cmd_finetune(args: argparse.Namespace) -> int:
    from anyecg.evaluation.metrics import to_jsonable

    seeds = args.seeds if args.seeds is not None else 5
    steps = args.steps if args.steps is not None else 200
    if args.task == "beats":
        from anyecg.tasks.beat_task import BeatConfig, finetune_beats

        summary = finetune_beats(args.data, args.out, BeatConfig(
            model=str(args.model) if args.model else None, baseline=args.baseline, random_init=args.random_init,
            linear_probe=args.linear_probe, rr_features=args.rr_features, template_features=args.template_features,
            seeds=seeds, max_epochs=args.max_epochs,
            patience=args.patience, budget_minutes=args.budget_minutes, max_steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, max_beats_per_record=args.max_beats_per_record,
            **_given(ema_epochs=args.ema_epochs),
        ))
        headline = {k: summary["metrics"][k] for k in ("accuracy", "f1_macro") if k in summary["metrics"]}
        print(json.dumps(to_jsonable(headline)))
        print(f"summary: {args.out / 'summary.json'}")
        return 0
    if args.task == "longecg":
        from anyecg.tasks.longecg import LongECGConfig, finetune_longecg

        summary = finetune_longecg(args.data, args.out, LongECGConfig(
            model=str(args.model) if args.model else None, random_init=args.random_init, seeds=seeds, steps=steps,
            batch_size=args.batch_size, lr=args.lr,
        ))
        headline = {k: summary["metrics"][k] for k in ("accuracy", "auroc", "f1_weighted") if k in summary["metrics"]}
        print(json.dumps(to_jsonable(headline)))
        print(f"summary: {args.out / 'summary.json'}")
        return 0
    if args.task == "leadgen":
        from anyecg.tasks.leadgen import LeadGenFinetuneConfig, finetune_leadgen

        summary = finetune_leadgen(args.data, args.out, LeadGenFinetuneConfig(
            input_leads=tuple(args.input_leads), target_leads=tuple(args.target_leads),
            model=str(args.model) if args.model else None, baseline=args.baseline, linear_probe=args.linear_probe,
            seeds=seeds, steps=steps, batch_size=args.batch_size, lr=args.lr, corruption=args.corruption,
            noise_snr_db=args.noise_snr_db, noise_wander=args.noise_wander, noise_bursts=args.noise_bursts,
            noise_seed=args.noise_seed,
        ))
        headline = {k: summary["metrics"][k] for k in ("psnr", "ssim", "mae") if k in summary["metrics"]}
        print(json.dumps(to_jsonable(headline)))
        print(f"summary: {args.out / 'summary.json'}")
        return 0
    from anyecg.tasks.runner import FinetuneConfig, finetune, lead_mapping

    config = FinetuneConfig(
        task=args.task, model=str(args.model) if args.model else None, baseline=args.baseline,
        random_init=args.random_init, linear_probe=args.linear_probe, seeds=args.seeds or 1,
        label_fraction=args.label_fraction, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        max_epochs=args.max_epochs, patience=args.patience, budget_minutes=args.budget_minutes,
        leads=lead_mapping(args.leads), rr_features=args.rr_features, drop_path=args.drop_path,
        **_given(ema_epochs=args.ema_epochs),
    )
    summary = finetune(args.data, args.out, config)
    keys = ("accuracy", "f1_macro", "auroc", "f1_weighted")
    print(json.dumps(to_jsonable({k: summary["metrics"][k] for k in keys if k in summary["metrics"]})))
    if summary["ensemble"] is not None:
        test = summary["ensemble"]["test"]
        print(f"ensemble of the {config.seeds} seeds, test: " + json.dumps(to_jsonable({k: test[k] for k in keys if k in test})))
    print(f"summary: {args.out / 'summary.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from anyecg.evaluation.metrics import to_jsonable
    from anyecg.tasks.beat_task import evaluate_beats
    from anyecg.tasks.leadgen import evaluate_leadgen
    from anyecg.tasks.longecg import evaluate_longecg
    from anyecg.tasks.folders import model_folder
    from anyecg.tasks.runner import evaluate
    from anyecg.training.checkpoint import load_config

    model = model_folder(args.model)  # a run folder's first seed, or the model folder given
    task = load_config(model).get("task")
    if task == "beats":  # DS1 / DS2 by record id: "test" scores DS2; a run folder: its seed ensemble
        metrics = evaluate_beats(args.model, args.data, args.out, split=args.split)
    elif task in ("leadgen", "longecg"):
        evaluators = {"leadgen": evaluate_leadgen, "longecg": evaluate_longecg}
        metrics = evaluators[task](model, args.data, args.split, args.out)
    else:  # a run folder: its seed ensemble, where finetune wrote one
        metrics = evaluate(args.model, args.data, args.split, args.out)
    print(json.dumps({k: v for k, v in to_jsonable(metrics).items() if not isinstance(v, dict)}))
    return 0


def _add_use(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="per-record class probabilities from a fine-tuned model")
    p.add_argument("paths", nargs="+", help="record files, folders or globs")
    p.add_argument("--model", required=True, help="fine-tuned model (finetune's seed-K/final, or its run folder: the "
                   "seed ensemble of a run of several seeds), or a published "
                   "classifier: 12_lead_ECGFounder.pth, mimic_iv_ecg_finetuned.pt, hf://OWNER/REPO/FILE, or its converted folder")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--top", type=int, default=10, help="published classifiers, table format: findings shown per record")
    p.add_argument("--fs", type=float, help="sampling rate for formats that carry none")
    p.add_argument("--leads", type=_lead_list, help="lead names for formats that carry none")
    p = sub.add_parser("embed", help="one embedding per record (any rate, leads, length) to .npy or .parquet")
    p.add_argument("paths", nargs="+", help="record files, folders or globs")
    p.add_argument("--out", required=True, type=Path, help="FILE.npy or FILE.parquet")
    p.add_argument("--model", help="AnyECG checkpoint (default: the one shipped in the package), an ECG-FM or "
                   "ECGFounder checkpoint folder, a published checkpoint file, or hf://OWNER/REPO/FILE")
    p.add_argument("--fs", type=float, help="sampling rate for formats that carry none")
    p.add_argument("--leads", type=_lead_list, help="lead names for formats that carry none")


def _published_classifier(model: str):
    """The FamilyModel when `model` is a published classifier (file, hf:// name or converted folder), else None."""
    from anyecg.families import FamilyModel, is_family_checkpoint

    if not is_family_checkpoint(model):
        return None
    family = FamilyModel.from_pretrained(model)
    if family.labels is None:
        raise ValueError(f"{model}: this {family.family} network has no published classifier head; predict needs "
                         "a classifier (a published one, or anyecg finetune --model ...)")
    return family


def _predict_published(args: argparse.Namespace, family) -> int:
    """Every label's probability by name, top findings first."""
    rows = []
    for path, record, problem in _records(args):
        if record is None:
            print(f"skipped {path}: {problem}", file=sys.stderr)
            continue
        probabilities = family.predict(record.signal, record.fs, record.raw_leads or record.leads)
        order = probabilities.argsort()[::-1]
        rows.append({"record": record.record_id, "source": str(path),
                     "findings": [{"label": family.labels[k], "probability": round(float(probabilities[k]), 6)} for k in order]})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print("record,rank,label,probability")
        for row in rows:
            for rank, finding in enumerate(row["findings"], 1):
                print(f"{row['record']},{rank},\"{finding['label']}\",{finding['probability']}")
    else:
        for row in rows:
            print(row["record"])
            for finding in row["findings"][: args.top]:
                print(f"  {finding['probability']:.3f}  {finding['label']}")
    return 0 if rows else 2


def _records(args: argparse.Namespace):
    """(path, Recording or None, problem) for every record under the given paths; bad ones reported."""
    from anyecg.io import find_records, read_record
    from anyecg.io.recording import RecordError

    paths = find_records(args.paths)
    if not paths:
        raise ValueError(f"no records found in {args.paths}")
    for path in paths:
        try:
            yield path, read_record(path, fs=args.fs, leads=args.leads), None
        except RecordError as err:
            yield path, None, err.problem


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from anyecg.tasks.runner import load_finetuned, predict_signal

    published = _published_classifier(args.model)
    if published is not None:
        return _predict_published(args, published)
    model, config = load_finetuned(args.model)
    classes = config["classes"]
    rows = []
    for path, record, problem in _records(args):
        if record is None:
            print(f"skipped {path}: {problem}", file=sys.stderr)
            continue
        probabilities = predict_signal(model, config, record.signal, record.fs, record.raw_leads or record.leads)
        if config.get("multilabel"):  # every class over its threshold (chosen on validation)
            over = probabilities >= np.asarray(config.get("thresholds", [0.5] * len(classes)))
            predicted = ";".join(c for c, hit in zip(classes, over) if hit)
        else:
            predicted = classes[int(probabilities.argmax())]
        rows.append({"record": record.record_id, "source": str(path), "predicted": predicted,
                     **{f"p_{c}": round(float(p), 6) for c, p in zip(classes, probabilities)}})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        import pandas as pd

        print(pd.DataFrame(rows).to_csv(index=False), end="")
    else:
        for row in rows:
            scores = "  ".join(f"{k[2:]}={v:.3f}" for k, v in row.items() if k.startswith("p_"))
            print(f"{row['record']:<24} {row['predicted']:<12} {scores}")
    return 0 if rows else 2


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from anyecg.families import FamilyModel, is_family_checkpoint
    from anyecg.pretrained import AnyECG

    if args.out.suffix not in (".npy", ".parquet"):
        raise ValueError(f"--out must end in .npy or .parquet, got {args.out}")
    model = FamilyModel.from_pretrained(args.model) if is_family_checkpoint(args.model) else AnyECG.from_pretrained(args.model)
    ids, vectors = [], []
    for path, record, problem in _records(args):
        if record is None:
            print(f"skipped {path}: {problem}", file=sys.stderr)
            continue
        ids.append(record.record_id)
        vectors.append(model.embed(record.signal, record.fs, record.raw_leads or record.leads))
    if not vectors:
        raise ValueError("no record could be embedded")
    matrix = np.stack(vectors).astype(np.float32)  # [records, D]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".npy":
        np.save(args.out, matrix)
        args.out.with_suffix(".records.txt").write_text("\n".join(ids) + "\n")
    else:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=[f"e{i}" for i in range(matrix.shape[1])])
        frame.insert(0, "record_id", ids)
        frame.to_parquet(args.out, index=False)
    print(f"{len(ids)} embeddings of {matrix.shape[1]} values -> {args.out}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP service: GET /health, POST /predict, POST /embed (OpenAPI at /docs)")
    p.add_argument("--model", help="AnyECG checkpoint for /embed (default: the one shipped in the package), or an "
                   "ECG-FM / ECGFounder checkpoint (folder, published file, hf://OWNER/REPO/FILE)")
    p.add_argument("--classifier", help="fine-tuned model for /predict (finetune's seed-K/final, or its run folder: "
                   "the seed ensemble), or a published "
                   "classifier (12_lead_ECGFounder.pth, mimic_iv_ecg_finetuned.pt, hf://..., or its converted folder)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-request-mb", type=float, default=32.0, help="largest request body accepted")
    p.add_argument("--max-duration-s", type=float, default=3600.0, help="longest recording accepted, in seconds")


def cmd_serve(args: argparse.Namespace) -> int:
    from anyecg.serve.app import ServeLimits, run_server

    limits = ServeLimits(max_request_bytes=int(args.max_request_mb * 2**20), max_duration_s=args.max_duration_s)
    run_server(model=args.model, classifier=args.classifier, host=args.host, port=args.port, limits=limits)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model's encoder to ONNX, checked against PyTorch with onnxruntime")
    p.add_argument("--model", type=Path, help="AnyECG checkpoint (default: the one shipped in the package)")
    p.add_argument("--onnx", required=True, type=Path, help="output FILE.onnx")


def cmd_export(args: argparse.Namespace) -> int:
    from anyecg.export import export_onnx

    report = export_onnx(args.model, args.onnx)
    print(json.dumps(report))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets of every family")
    p.add_argument("--json", action="store_true", help="print a JSON list")


def _train_config(args: argparse.Namespace):
    from anyecg.training.loop import TrainConfig

    return TrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, accumulation=args.accumulation,
        lr=args.lr if args.lr is not None else (1e-4 if args.command == "pretrain-tokenizer" else 5e-4),
        warmup_steps=min(args.warmup, max(args.steps // 10, 1)), precision=args.precision, seed=args.seed,
        save_every=args.save_every, log_every=args.log_every, device=args.device, fsdp=args.fsdp,
    )


def _health_options(args: argparse.Namespace) -> dict:
    """Health figures every --health-every steps; by default every --save-every steps where the store
    has held-out records (and off, with a note, where it has none)."""
    every = args.health_every
    measured = args.health_data or args.data
    if every is None:
        from anyecg.data.store import Store

        every = args.save_every
        if args.fsdp:
            print("health figures are off under --fsdp (they run on the main process alone)", file=sys.stderr)
            every = 0
        elif not Store(measured).manifest["split"].isin(["val", "test"]).any():
            print(f"{measured}: no val/test records, so no health figures (see --health-every)", file=sys.stderr)
            every = 0
    return {"health_every": every, "health_records": args.health_records, "health_probe": args.health_probe,
            "health_data": args.health_data}


def cmd_pretrain_tokenizer(args: argparse.Namespace) -> int:
    from anyecg.training.pretrain import pretrain_tokenizer

    metrics = pretrain_tokenizer(args.data, args.preset or "anyecg-small", args.out, _train_config(args),
                                 window_s=args.window_seconds, **_health_options(args))
    print(json.dumps({"out": str(args.out), **metrics}))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    if args.family != "anyecg":
        from anyecg.families import pretrain_family

        preset = args.preset or f"{args.family}-small"
        metrics = pretrain_family(args.family, args.data, preset, args.out, _train_config(args))
        print(json.dumps({"out": str(args.out), "preset": preset, **metrics}))
        return 0
    if args.tokenizer is None:
        raise ValueError("AnyECG stage 2 needs --tokenizer (the stage-1 run folder of `anyecg pretrain-tokenizer`)")
    from anyecg.training.pretrain import pretrain_backbone

    metrics = pretrain_backbone(
        args.data, args.tokenizer, args.preset or "anyecg-small", args.out, _train_config(args),
        window_s=args.window_seconds, **_health_options(args),
    )
    print(json.dumps({"out": str(args.out), **metrics}))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from anyecg.models.registry import list_all_presets

    presets = list_all_presets()
    if args.json:
        print(json.dumps(presets, indent=2))
        return 0
    for preset in presets:
        print(f"{preset['name']:<20} {preset['family']:<11} {preset['parameters'] / 1e6:>9.2f}M  {preset.get('description', '')}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from anyecg.data.prepare import PrepareConfig, prepare
    from anyecg.signal.recipe import Recipe

    result = prepare(PrepareConfig(
        sources=args.sources, out=args.out, recipe=Recipe(notch_hz=args.mains), labels_csv=args.labels,
        workers=args.workers, records_per_shard=args.records_per_shard, fs=args.fs, leads=args.leads,
        channels=args.channels, annotator=args.annotator, split_seed=args.seed, progress=not args.no_progress,
    ))
    print(f"store: {result.store}")
    print(f"records: {result.records} prepared, {result.skipped} skipped "
          f"({result.shards_written} shards written, {result.shards_reused} reused from an earlier run)")
    for reason, count in result.skipped_reasons.items():
        print(f"  skipped {count}: {reason}")
    if result.not_read:
        listing = ", ".join(f"{suffix} {count}" for suffix, count in result.not_read.items())
        print(f"  not read: {sum(result.not_read.values())} files that are not records ({listing})")
    if result.skipped or result.not_read:
        print(f"  details: {result.store / 'skipped.csv'}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from anyecg.data.inspect import describe_record, describe_store, format_description, is_store

    if is_store(args.path):
        info = describe_store(args.path)
    else:
        info = describe_record(args.path, fs=args.fs, leads=args.leads)
    print(json.dumps(info, indent=2, default=str) if args.json else format_description(info))
    if args.plot:
        print(f"plot: {_plot(args)}")
    return 0


def _plot(args: argparse.Namespace) -> Path:
    from anyecg.evaluation.ecg_plot import plot_ecg

    if (args.path / "manifest.parquet").is_file():
        from anyecg.data.store import Store

        store = Store(args.path)
        ids = store.manifest["record_id"].tolist()
        index = ids.index(args.record) if args.record else 0
        record = store[index]
        signal = store.signal(index, normalized=False)
        return plot_ecg(signal, record.fs, record.leads, args.plot, seconds=args.seconds, title=record.record_id)
    from anyecg.io import read_record

    record = read_record(args.path, fs=args.fs, leads=args.leads)
    return plot_ecg(record.signal, record.fs, record.leads, args.plot, seconds=args.seconds, title=record.record_id)


def cmd_demo(args: argparse.Namespace) -> int:
    from anyecg.demo import DemoConfig, run_demo

    config = DemoConfig.quick if args.quick else DemoConfig
    run_demo(args.out, config(workers=args.workers, threads=args.threads))
    return 0


COMMANDS = {
    "prepare": cmd_prepare, "inspect": cmd_inspect, "demo": cmd_demo, "models": cmd_models,
    "pretrain-tokenizer": cmd_pretrain_tokenizer, "pretrain": cmd_pretrain,
    "finetune": cmd_finetune, "evaluate": cmd_evaluate, "predict": cmd_predict, "embed": cmd_embed,
    "serve": cmd_serve, "export": cmd_export,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anyecg", description="ECG foundation models for real-world recordings")
    parser.add_argument("--version", action="version", version=f"anyecg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_inspect(sub)
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_use(sub)
    _add_serve(sub)
    _add_export(sub)
    _add_models(sub)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from anyecg.data.store import StoreError
    from anyecg.io.recording import RecordError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (RecordError, StoreError, ValueError, FileNotFoundError) as err:
        print(f"anyecg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # unknown preset or class names
        print(f"anyecg {args.command}: error: {err.args[0]}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional extra (serve, export) not installed: the message says which
        print(f"anyecg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
