"""The demo's self-contained HTML report, and the two figures only it draws.

    html_path = write_report(out, results)   # results: what the demo wrote to out/metrics.json

One file, nothing fetched: images are inlined as base64 data URIs, the CSS is inline, and there are
no scripts. Every number in a table is printed from `results` and carries where it came from:
`data-key` is its path in out/metrics.json (parts joined by "/") and, for fine-tuning scores,
`data-source` + `data-source-key` name the per-seed `metrics.json` it was copied from; a "mean ± std"
over seeds has `data-mean-std-key` instead; `data-digits` is how many decimals are printed. So a
reader (or a test) can check each cell.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

DOCS_RESULTS = "docs/results.md"
MISSING = "n/a"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 24px auto;
       padding: 0 16px; color: #1d2433; line-height: 1.45; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #d8dee9; padding-bottom: 4px; margin-top: 36px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d8dee9; padding: 4px 8px; text-align: right; }
th { background: #eef2f7; } td.text, th.text { text-align: left; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #e5e9f0; }
figcaption { font-size: 13px; color: #4c566a; }
.skipped { color: #a3333d; }
code { background: #eef2f7; padding: 0 3px; }
td { white-space: nowrap; } td.wrap { white-space: normal; }
.row { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
.row > figure, .row > table { flex: 1 1 0; min-width: 280px; }
.row > figure.narrow { flex: 0.6 1 0; }
"""


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ecg_codes(
    signal: np.ndarray, fs: float, leads: list[str], codes: np.ndarray, path: str | Path, *, title: str = ""
) -> Path:
    """Each lead of `signal` [L, T] (mV) in its own row with the rhythm code of each 1 s patch
    (`codes` [L, seconds], from `AnyECG.tokenize`) written over it. The codes that occur more than once
    get a colour each (the 20 most frequent), so repeated rhythm patterns stand out; the rest stay white."""
    plt = _pyplot()
    signal = np.asarray(signal, dtype=np.float32)
    codes = np.asarray(codes)
    if signal.ndim != 2 or signal.shape[0] != len(leads) or codes.shape[0] != len(leads):
        raise ValueError(f"signal {signal.shape}, codes {codes.shape} and {len(leads)} leads do not match")
    seconds = min(codes.shape[1], int(signal.shape[1] // fs))
    window = signal[:, : round(seconds * fs)]  # [L, n]
    t = np.arange(window.shape[1]) / fs
    values, counts = np.unique(codes[:, :seconds], return_counts=True)
    repeated = values[counts > 1][np.argsort(-counts[counts > 1], kind="stable")][:20]
    tint_of = {int(code): plt.get_cmap("tab20")(k) for k, code in enumerate(repeated)}
    fig, axes = plt.subplots(len(leads), 1, figsize=(12, 0.85 * len(leads) + 0.8), sharex=True, squeeze=False)
    for row, (lead, trace) in enumerate(zip(leads, window)):
        ax = axes[row, 0]
        centred = trace - np.median(trace)  # baseline wander is not drawn as an offset
        span = max(float(np.abs(centred).max()), 0.5)
        for second in range(seconds):
            code = int(codes[row, second])
            if code in tint_of:
                ax.axvspan(second, second + 1, color=tint_of[code], alpha=0.35, lw=0)
            ax.axvline(second, color="0.8", lw=0.5)
            ax.text(second + 0.03, span * 1.05, str(code), fontsize=7, va="top", color="#1d2433")
        ax.plot(t, centred, color="black", lw=0.6)
        ax.set_ylim(-span * 1.1, span * 1.3)
        ax.set_yticks([])
        ax.set_ylabel(lead, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xlim(0, seconds)
    axes[-1, 0].set_xticks(range(seconds + 1))
    axes[-1, 0].set_xlabel("seconds (one rhythm code per lead and second; the number is the code index)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(h_pad=0.1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_log(path: str | Path) -> list[dict]:
    """Rows of a training loop's JSONL log, one per logged step (a resumed run's repeats: the last wins)."""
    rows: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[int(row["step"])] = row
    return [rows[step] for step in sorted(rows)]


def plot_loss_curves(tokenizer_log: list[dict], backbone_log: list[dict], path: str | Path) -> Path:
    """Stage-1 losses (total and its terms) and stage-2 masked-code loss and accuracy against step."""
    plt = _pyplot()
    fig, (ax_tok, ax_bb) = plt.subplots(1, 2, figsize=(12, 3.6))
    steps = [row["step"] for row in tokenizer_log]
    for name in ("loss", "morphology", "frequency", "demography", "codebook"):
        if tokenizer_log and name in tokenizer_log[0]:
            ax_tok.plot(steps, [row[name] for row in tokenizer_log], marker=".", label=name, lw=2 if name == "loss" else 1)
    ax_tok.set_title("stage 1: tokenizer losses", fontsize=10)
    ax_tok.set_xlabel("step")
    ax_tok.legend(fontsize=8)
    steps = [row["step"] for row in backbone_log]
    ax_bb.plot(steps, [row["loss"] for row in backbone_log], marker=".", color="tab:blue", label="loss")
    ax_bb.set_xlabel("step")
    ax_bb.set_ylabel("masked-code cross-entropy", color="tab:blue")
    ax_bb.set_title("stage 2: masked rhythm-code modeling", fontsize=10)
    if backbone_log and "accuracy" in backbone_log[0]:
        twin = ax_bb.twinx()
        twin.plot(steps, [row["accuracy"] for row in backbone_log], marker=".", color="tab:orange")
        twin.set_ylabel("masked-code accuracy", color="tab:orange")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- HTML pieces


def format_number(value, digits: int = 3) -> str:
    """How the report prints a number: `digits` decimals for floats, ints as they are, n/a for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def lookup(tree: dict, key: str):
    """The value at a '/'-joined path of keys; None where the path is absent."""
    node = tree
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def image_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(path: str | Path, caption: str, figure_id: str, css_class: str = "") -> str:
    attributes = f'id="{figure_id}"' + (f' class="{css_class}"' if css_class else "")
    return f"<figure {attributes}>{image_tag(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _cell(results: dict, key: str, digits: int = 3, source: tuple[str, str] | None = None) -> str:
    """A table cell printing `results[key]`, tagged with where the number lives."""
    attributes = f'data-key="{html.escape(key)}" data-digits="{digits}"'
    if source is not None:
        attributes += f' data-source="{html.escape(source[0])}" data-source-key="{html.escape(source[1])}"'
    return f"<td {attributes}>{format_number(lookup(results, key), digits)}</td>"


def _mean_std_cell(results: dict, key: str, digits: int = 3) -> str:
    """"mean ± std" of a score aggregated over seeds (`key` holds {"mean", "std", "n"})."""
    mean, std = lookup(results, key + "/mean"), lookup(results, key + "/std")
    return (f'<td data-mean-std-key="{html.escape(key)}" data-digits="{digits}">'
            f"{format_number(mean, digits)} ± {format_number(std, digits)}</td>")


def _text(value) -> str:
    return f'<td class="text">{html.escape(str(value))}</td>'


def _table(header: list[str], rows: list[str], table_id: str) -> str:
    head = "".join(f'<th class="text">{html.escape(h)}</th>' if i == 0 else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ----------------------------------------------------------------------------- sections


def _data_section(results: dict) -> str:
    data = results["data"]
    rows = []
    for name in data["per_source"]:
        base = f"data/per_source/{name}"
        source = data["per_source"][name]
        rows.append(f"<tr>{_text(name)}{_cell(results, base + '/records')}{_text(source['leads'])}"
                    f"{_text(source['rates_hz'])}{_cell(results, base + '/minutes', 1)}{_text(source['splits'])}</tr>")
    sources = _table(["source", "records", "leads per record", "original rate (Hz)", "minutes", "split (records)"],
                     rows, "sources")
    label_rows = [f"<tr>{_text(label)}{_cell(results, 'data/labels/' + label)}</tr>" for label in data["labels"]]
    third = -(-len(label_rows) // 3)
    labels = '<div class="row">' + "".join(
        _table(["label (SNOMED CT code, abbreviation)", "records"], label_rows[i : i + third], f"labels-{i // third + 1}")
        for i in range(0, len(label_rows), third)) + "</div>"
    return (
        '<section id="data"><h2>Data</h2>'
        f"<p>{data['records']} real PhysioNet recordings shipped inside the package, prepared into one store "
        f"(resampled to {data['fs']} Hz, band-pass, notch, wavelet denoising, 1 s patches) and split by patient "
        f"into train / val / test.</p>{sources}<p>Labels as given in the record headers:</p>{labels}</section>"
    )


def _ecg_codes_section(results: dict, figures: dict[str, Path]) -> str:
    ecg = results["ecg_codes"]
    return (
        '<section id="ecg-codes"><h2>An ECG and its rhythm codes</h2>'
        f"<p>Record {html.escape(ecg['record_id'])} ({html.escape(ecg['labels'])}; {ecg['split']} split), read from "
        "its original file and tokenized with <code>AnyECG.tokenize(signal, fs, leads)</code> of the shipped "
        "<code>anyecg-small</code> checkpoint: every lead and every second becomes one code of its "
        f"{ecg['codes']}-code rhythm codebook. Codes that occur more than once in this record are coloured "
        "(one colour per code); the others are left white.</p>"
        f"{_figure(figures['ecg_codes'], 'ECG with its rhythm-code tokens', 'figure-ecg-codes')}</section>"
    )


def _pretraining_section(results: dict, figures: dict[str, Path]) -> str:
    pre = results["pretraining"]
    rows = []
    for stage, label in (("tokenizer", "stage 1: tokenizer"), ("backbone", "stage 2: masked codes")):
        base = f"pretraining/{stage}"
        rows.append(f"<tr>{_text(label)}{_cell(results, base + '/steps')}{_cell(results, base + '/first_loss')}"
                    f"{_cell(results, base + '/last_loss')}{_cell(results, base + '/parameters')}</tr>")
    table = _table(["stage", "steps", "first logged loss", "last logged loss", "parameters"], rows, "pretraining-losses")
    return (
        '<section id="pretraining"><h2>Pretraining</h2>'
        f"<p>A short run of the <code>{html.escape(pre['preset'])}</code> preset on the train split, to show both "
        "stages run and their losses fall: the tokenizer (morphology, wavelet, demography, codebook and commitment "
        "losses) and then the backbone predicting the tokenizer's codes at masked positions. A few CPU minutes "
        "cannot train a useful model, so fine-tuning below starts from the shipped, longer-trained "
        "<code>anyecg-small</code> checkpoint (see <code>src/anyecg/weights/anyecg-small/MODEL_CARD.md</code>).</p>"
        f"<p>{_loss_trend(pre)}</p>{table}{_figure(figures['loss_curves'], 'Pretraining loss curves', 'figure-loss-curves')}</section>"
    )


def _loss_trend(pretraining: dict) -> str:
    """One sentence per stage on whether its logged loss fell (logged losses are single noisy batches)."""
    sentences = []
    for stage, label in (("tokenizer", "The tokenizer's"), ("backbone", "The backbone's")):
        info = pretraining[stage]
        first, last = format_number(info["first_loss"]), format_number(info["last_loss"])
        if info["last_loss"] < info["first_loss"]:
            sentences.append(f"{label} loss fell from {first} to {last} in {info['steps']} steps.")
        else:
            sentences.append(f"{label} loss did not fall in {info['steps']} steps ({first} to {last}): too few steps "
                             "for single-batch losses to show a trend (the full demo runs more).")
    return " ".join(sentences)


CODEBOOK_FIGURES = [
    ("held_out_tokens", "held-out tokens", 3), ("codes", "codes", 3), ("code_usage", "codebook usage (fraction)", 3),
    ("code_perplexity", "code perplexity", 1), ("patch_mse", "patch MSE (z-scored; zeros score 1)", 3),
    ("masked_code_accuracy", "masked-code accuracy", 3),
    ("most_frequent_code_accuracy", "most-frequent-code baseline", 3),
]


def _codebook_section(results: dict, figures: dict[str, Path]) -> str:
    models = results["codebook"]
    header = ["figure"] + [models[name]["label"] for name in models]
    rows = [f"<tr>{_text(label)}" + "".join(_cell(results, f"codebook/{name}/metrics/{key}", digits) for name in models)
            + "</tr>" for key, label, digits in CODEBOOK_FIGURES]
    return (
        '<section id="reconstruction"><h2>Original vs reconstructed patches</h2>'
        "<p>The tokenizer's morphology head rebuilds each 1 s patch from its code alone (shipped "
        "<code>anyecg-small</code>, first val/test window, three leads). Only the baseline and the rough "
        "position of QRS complexes come back: a 1024-code vocabulary summarises a second of ECG, it does not "
        "store it.</p>"
        f"{_figure(figures['patches'], 'Original vs reconstructed patches', 'figure-patches')}</section>"
        '<section id="codebook"><h2>Codebook usage</h2>'
        "<p>Measured on the store's val + test records, tiled into 10 s windows. The demo's own model has "
        "never seen them. The shipped checkpoint was pretrained (without labels) on the project's PhysioNet "
        "folder, which holds these same recordings, so for it they are not held out: its model card gives its "
        "truly held-out figures.</p>"
        f"{_table(header, rows, 'codebook-figures')}"
        f"<div class=\"row\">{_figure(figures['code_usage_shipped'], 'Code usage, shipped anyecg-small', 'figure-code-usage')}"
        f"{_figure(figures['code_usage_demo'], 'Code usage, the demo model', 'figure-code-usage-demo')}</div></section>"
    )


METRIC_COLUMNS = [
    ("accuracy", "accuracy"), ("auroc", "AUROC"), ("auroc_normal_positive", "AUROC normal+ (paper)"),
    ("auroc_abnormal_positive", "AUROC abnormal+"), ("auprc", "AUPRC"), ("f1_weighted", "F1 weighted"),
    ("f1_macro", "F1 macro"), ("precision", "precision weighted"),
]
PER_CLASS_COLUMNS = [("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("auroc", "AUROC")]


def _metrics_row(results: dict, task: str, label: str, base: str, source: str) -> str:
    """One model's test metrics: `results[base]`, copied from the evaluation file `source`."""
    cells = [_text(task), _text(label), _cell(results, f"{base}/n", source=(source, "n"))]
    for key, _ in METRIC_COLUMNS:
        cells.append(_cell(results, f"{base}/{key}", source=(source, key)) if key in lookup(results, base) else _text("—"))
    return f"<tr>{''.join(cells)}</tr>"


def _task_rows(results: dict, task: str) -> tuple[list[str], list[str]]:
    info = results["tasks"][task]
    rows, class_rows = [], []
    for seed in info["seeds"]:
        rows.append(_metrics_row(results, task, seed, f"tasks/{task}/seeds/{seed}", f"{task}/{seed}/test/metrics.json"))
    several = len(info["seeds"]) > 1
    if several:
        cells = [_text(task), _text("mean ± std"), _text("")]
        for key, _ in METRIC_COLUMNS:
            cells.append(_mean_std_cell(results, f"tasks/{task}/summary/{key}") if key in info["summary"] else _text("—"))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    if "ensemble" in info:  # the seeds' probabilities averaged: one model
        rows.append(_metrics_row(results, task, f"ensemble of {len(info['seeds'])} seeds", f"tasks/{task}/ensemble",
                                 f"{task}/ensemble/test/metrics.json"))
    # per class: over the seeds where there are several, else the one seed's figures
    first = next(iter(info["seeds"]))
    source = f"{task}/{first}/test/metrics.json"
    for name in info["classes"]:
        support = f"per_class/{name}/support"
        if not lookup(info["seeds"][first], support):
            continue  # no test records: every score of the class is undefined
        cells = [_text(task), _text(name), _cell(results, f"tasks/{task}/seeds/{first}/{support}", source=(source, support))]
        for key, _ in PER_CLASS_COLUMNS:
            score = f"per_class/{name}/{key}"
            cells.append(_mean_std_cell(results, f"tasks/{task}/summary/{score}") if several
                         else _cell(results, f"tasks/{task}/seeds/{first}/{score}", source=(source, score)))
        class_rows.append(f"<tr>{''.join(cells)}</tr>")
    return rows, class_rows


def _finetune_section(results: dict, figures: dict[str, Path]) -> str:
    parts, metric_rows, class_rows, status_rows = [], [], [], []
    for task, info in results["tasks"].items():
        counts = [f"{split}: " + ", ".join(f"{c} {n}" for c, n in per_class.items())
                  for split, per_class in info["counts"].items()]
        counts = '<td class="text wrap">' + "<br>".join(html.escape(line) for line in counts) + "</td>"
        if info["status"] != "ran":
            status_rows.append(f'<tr>{_text(task)}<td class="text skipped">not run: {html.escape(info["reason"])}</td>'
                               f"{counts}</tr>")
            continue
        status_rows.append(f"<tr>{_text(task)}{_text('ran: ' + ', '.join(info['classes']))}{counts}</tr>")
        rows, per_class = _task_rows(results, task)
        metric_rows += rows
        class_rows += per_class
        first = next(iter(info["seeds"]))
        parts.append(
            f"<h3>{html.escape(task)}</h3><div class=\"row\">"
            + _figure(figures[f"roc_{task}"], f"{task}: ROC and precision-recall, test split, {first}", f"figure-roc-{task}")
            + _figure(figures[f"confusion_{task}"], f"{task}: confusion matrix, test split, {first}",
                      f"figure-confusion-{task}", "narrow")
            + "</div>")
    status = _table(["task", "status and classes", "labelled records per split"], status_rows, "task-status")
    header = ["task", "seed", "records"] + [label for _, label in METRIC_COLUMNS]
    class_header = ["task", "class", "test records"] + [label for _, label in PER_CLASS_COLUMNS]
    config = results["config"]
    return (
        '<section id="finetuning"><h2>Fine-tuning and evaluation</h2>'
        f"<p>The shipped <code>anyecg-small</code> backbone with a linear head, fine-tuned end to end for "
        f"{config['finetune_steps']} steps (batch {config['finetune_batch_size']}) per seed on the train split and "
        "scored on the test split (one prediction per record, averaged over its 10 s windows). Anomaly detection is "
        "normal vs abnormal, with <em>normal</em> the positive class as in the paper (both orientations are shown); "
        "arrhythmia detection is the record's rhythm class. A task runs only when at least two of its classes have "
        f"records in both the train and the test split.</p>{status}</section>"
        f'<section id="roc"><h2>ROC, precision-recall and confusion</h2>{"".join(parts) or "<p>No task ran.</p>"}</section>'
        '<section id="metrics"><h2>Metrics</h2><p>Every number below is read from the per-seed '
        "<code>TASK/seed-K/test/metrics.json</code> (mean ± std over seeds: <code>TASK/summary.json</code>); n/a "
        "marks an undefined score (a class with no test records, or precision of a class never predicted). "
        f"{_test_size_note(results)}</p>{_table(header, metric_rows, 'metrics-table')}"
        f"<p>Per class, for the classes with test records{' (mean ± std over seeds)' if config['seeds'] > 1 else ''}:</p>"
        f"{_table(class_header, class_rows, 'per-class-table')}</section>"
    )


def _test_size_note(results: dict) -> str:
    sizes = {task: next(iter(info["seeds"].values()))["n"] for task, info in results["tasks"].items() if info["seeds"]}
    if not sizes:
        return ""
    listed = ", ".join(f"{task} {n}" for task, n in sizes.items())
    return (f"Test records: {listed}; one record more or less right moves accuracy by 1/{min(sizes.values())} "
            "or more, so read these as a check that the pipeline works.")


TIMING_LABELS = {
    "prepare": "prepare the store", "tokenizer": "stage 1: tokenizer pretraining",
    "backbone": "stage 2: masked pretraining", "codebook": "codebook and reconstruction figures",
    "finetune_anomaly": "fine-tune + evaluate: anomaly", "finetune_arrhythmia": "fine-tune + evaluate: arrhythmia",
    "figures": "ECG-with-codes and loss figures", "total": "total (before writing this page)",
}


def _timings_section(results: dict) -> str:
    rows = [f"<tr>{_text(TIMING_LABELS.get(stage, stage))}{_cell(results, 'timings_s/' + stage, 1)}</tr>"
            for stage in results["timings_s"]]
    machine = results["machine"]
    return (
        '<section id="timings"><h2>Timings</h2>'
        f"<p>Wall-clock seconds on this machine ({machine['cpus']} CPUs, {machine['torch_threads']} torch threads, "
        f"{html.escape(machine['device'])}); other processes running at the same time slow it down.</p>"
        f"{_table(['stage', 'seconds'], rows, 'timings-table')}</section>"
    )


def render_report(results: dict, base: str | Path) -> str:
    """The whole page as one HTML string; `results["figures"]` paths are relative to `base`."""
    figures = {name: Path(base) / path for name, path in results["figures"].items()}
    data = results["data"]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>anyecg demo report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>anyecg demo</h1>"
        "<p>AnyECG (Wang et al., arXiv 2411.17711) end to end on the recordings shipped with the package: "
        "prepare, tokenizer pretraining, masked rhythm-code pretraining, fine-tuning for anomaly and arrhythmia "
        "detection, evaluation.</p>"
        f'<p class="note">Tiny data ({data["records"]} recordings, {data["splits"].get("test", 0)} of them in the '
        "test split), tiny step counts, a CPU: the numbers on this page are a demonstration that the pipeline runs, "
        f"not a benchmark. For benchmark results on the full public datasets see <code>{DOCS_RESULTS}</code> in the "
        "anyecg repository.</p>"
        f"{_data_section(results)}{_ecg_codes_section(results, figures)}{_pretraining_section(results, figures)}"
        f"{_codebook_section(results, figures)}{_finetune_section(results, figures)}{_timings_section(results)}"
        "</body></html>"
    )


def write_report(out: str | Path, results: dict) -> Path:
    path = Path(out) / "report.html"
    path.write_text(render_report(results, out), encoding="utf-8")
    return path
