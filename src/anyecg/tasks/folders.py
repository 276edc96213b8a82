"""What every task runner writes and reads besides its model: the run's `summary.json`, and the
`config.json` + `recipe.json` of a fine-tuned model folder."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from anyecg.evaluation.metrics import to_jsonable
from anyecg.signal.recipe import Recipe
from anyecg.training.checkpoint import RECIPE_FILE, load_config

SUMMARY_FILE = "summary.json"
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
