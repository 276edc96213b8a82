"""What every task runner writes and reads besides its model: the run's `summary.json`, the
`config.json` + `recipe.json` of a fine-tuned model folder, and where a run keeps its models: one
`seed-K/final` per seed and, for a run of several seeds, `ensemble.json` naming them as one model."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from anyecg.evaluation.metrics import to_jsonable
from anyecg.signal.recipe import Recipe
from anyecg.training.checkpoint import CONFIG_FILE, RECIPE_FILE, load_config
from anyecg.training.loop import FINAL

SUMMARY_FILE = "summary.json"
ENSEMBLE_FILE = "ensemble.json"
# Model kinds in a fine-tuned config.json that read fixed windows (`x [B, C, T]` at their contract's
# rate) rather than AnyECG tokens.
CONTRACT_KINDS = ("baseline", "family")


def write_summary(out: str | Path, summary: dict) -> None:
    """`out/summary.json`: what a finetune run did and its metrics over seeds (NaN stored as null)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(json.dumps(to_jsonable(summary), indent=2))


def load_finetuned_config(directory: str | Path, tasks: Collection[str] | None = None) -> dict:
    """The config.json of a fine-tuned folder, with `config["recipe"]` its Recipe; a folder that is not
    a fine-tuned model (or, with `tasks`, not one of those tasks) is refused."""
    config = load_config(directory)
    if config.get("family") != "finetuned" or (tasks is not None and config.get("task") not in tasks):
        wanted = f"{'/'.join(tasks)} " if tasks is not None else ""
        raise ValueError(f"{directory}: not a fine-tuned {wanted}model (family {config.get('family')!r}, "
                         f"task {config.get('task')!r})")
    config["recipe"] = Recipe.from_json((Path(directory) / RECIPE_FILE).read_text())
    return config


def model_folder(path: str | Path) -> Path:
    """The fine-tuned model folder of `path`: the folder itself, a seed's `final`, or, for a finetune
    run folder, `seed-0/final` (the one model of a default single-seed run)."""
    path = Path(path)
    for candidate in (path, path / FINAL, path / "seed-0" / FINAL):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no fine-tuned model here (looked for {CONFIG_FILE} in it, in {FINAL}/ and in "
                            f"seed-0/{FINAL}/); pass a finetune run folder or its seed-K/final")


def seed_models(run: Path, seeds: int) -> list[Path]:
    """The `seed-K/final` model folders of a finetune run of `seeds` seeds, K = 0 .. seeds - 1."""
    return [run / f"seed-{seed}" / FINAL for seed in range(seeds)]


def write_ensemble_file(out: Path, members: list[Path], facts: dict) -> dict:
    """`out/ensemble.json`: the member model folders (relative to `out`), how they are combined, and
    `facts` (validation score, thresholds); returns what it wrote."""
    spec = {"members": [path.relative_to(out).as_posix() for path in members],
            "combination": "mean of the members' class probabilities", **facts}
    (out / ENSEMBLE_FILE).write_text(json.dumps(to_jsonable(spec), indent=2))
    return spec
