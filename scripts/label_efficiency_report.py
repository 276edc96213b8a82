"""Label-efficiency figure and table: pretrained AnyECG against random init, linear probe and fine-tuning.

    python scripts/label_efficiency_report.py \
        --task "PTB-XL superclasses" le-ptbxl.json runs/ptbxl-ft \
        --task "single-lead rhythm" le-rhythm.json runs/rhythm-ft \
        --out docs/figures/label-efficiency.png

Each `--task` names a task, the JSON written by `benchmarks/label_efficiency.py` (linear probes of
the frozen embedding) and a folder of `anyecg finetune --task classify --seeds N --label-fraction F`
runs named `pre-F` (the pretrained model), `rand-F` (`--random-init`) and, where present,
`xresnet-F` (`--baseline xresnet1d-tiny`). Both kinds are scored by test macro AUROC, mean +/- std
over seeds. Prints one markdown table per task (fine-tuning macro F1 too) and draws one panel per
task.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FRACTIONS = (0.01, 0.1, 1.0)
FINETUNED = {"pre": "AnyECG pretrained, fine-tuned", "rand": "AnyECG random init, fine-tuned",
             "xresnet": "xresnet1d-tiny (supervised)"}


def probe_rows(path: Path) -> dict[tuple[str, float], tuple[float, float]]:
    """(init, fraction) -> (mean, std) test macro AUROC of the linear probes."""
    rows = json.loads(path.read_text())["results"]
    return {(row["init"], row["label_fraction"]): (row["test_macro_auroc_mean"], row["test_macro_auroc_std"])
            for row in rows}


def finetune_rows(folder: Path) -> dict[tuple[str, float], dict]:
    """(model, fraction) -> the summary of each finished run folder."""
    found = {}
    for name in FINETUNED:
        for fraction in FRACTIONS:
            summary = folder / f"{name}-{fraction}" / "summary.json"
            if summary.is_file():
                found[name, fraction] = json.loads(summary.read_text())
    return found


def cell(mean: float, std: float | None) -> str:
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def table(name: str, probes: dict, runs: dict) -> str:
    head = f"**{name}**: test macro AUROC (fine-tuned rows: / macro F1), mean ± std over seeds\n\n"
    lines = ["| model | " + " | ".join(f"{f:.0%} of labels" for f in FRACTIONS) + " |",
             "|---" * (len(FRACTIONS) + 1) + "|"]
    for init, label in (("pretrained", "AnyECG pretrained, linear probe"), ("random init", "AnyECG random init, linear probe")):
        if any((init, f) in probes for f in FRACTIONS):
            lines.append(f"| {label} | " + " | ".join(cell(*probes[init, f]) if (init, f) in probes else "" for f in FRACTIONS) + " |")
    for key, label in FINETUNED.items():
        if not any((key, f) in runs for f in FRACTIONS):
            continue
        cells = []
        for fraction in FRACTIONS:
            run = runs.get((key, fraction))
            if run is None:
                cells.append("")
                continue
            auroc, f1 = run["metrics"]["auroc"], run["metrics"]["f1_macro"]
            cells.append(f"{cell(auroc['mean'], auroc['std'])} / {f1['mean']:.3f} ({run['seeds']} seeds)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def plot(tasks: list[tuple[str, dict, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, (name, probes, runs) in zip(axes[0], tasks):
        series = [(f"AnyECG {init}, linear probe", "--", [probes.get((init, f)) for f in FRACTIONS])
                  for init in ("pretrained", "random init")]
        for key, label in FINETUNED.items():
            points = [runs.get((key, f)) for f in FRACTIONS]
            series.append((label, "-", [None if r is None else (r["metrics"]["auroc"]["mean"], r["metrics"]["auroc"]["std"] or 0.0)
                                        for r in points]))
        for label, style, points in series:
            xs = [f for f, p in zip(FRACTIONS, points) if p is not None]
            if xs:
                ys = [p for p in points if p is not None]
                ax.errorbar(xs, [m for m, _ in ys], yerr=[s for _, s in ys], linestyle=style, marker="o", capsize=3,
                            label=label)
        ax.set_xscale("log")
        ax.set_xticks(FRACTIONS, [f"{f:.0%}" for f in FRACTIONS])
        ax.set_xlabel("share of training labels")
        ax.set_ylabel("test macro AUROC")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs=3, action="append", required=True, metavar=("NAME", "PROBE_JSON", "FINETUNE_DIR"))
    parser.add_argument("--out", type=Path, required=True, help="the figure (PNG)")
    args = parser.parse_args()
    tasks = [(name, probe_rows(Path(probe)), finetune_rows(Path(folder))) for name, probe, folder in args.task]
    for name, probes, runs in tasks:
        print(table(name, probes, runs))
    plot(tasks, args.out)


if __name__ == "__main__":
    main()
