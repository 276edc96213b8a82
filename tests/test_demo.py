"""`anyecg demo --quick` end to end on the embedded recordings: the report is self-contained, has
every section, and each number it prints equals the JSON it was taken from."""

from __future__ import annotations

import base64
import copy
import json
import math
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import wfdb

from anyecg.cli import build_parser
from anyecg.demo import DemoConfig, embedded_data_dir, run_demo, task_problem
from anyecg.evaluation.tokenizer_report import code_perplexity, plot_code_usage
from anyecg.pretrained import AnyECG
from anyecg.report import render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    """Every tag's attributes, the ids in order, and each numeric table cell with its text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.ids: list[str] = []
        self.cells: list[dict] = []
        self._cell: dict | None = None
        self._figure: str | None = None
        self.figure_images: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "figure":
            self._figure = attributes.get("id")
            self.figure_images[self._figure] = []
        if tag == "img" and self._figure is not None:
            self.figure_images[self._figure].append(attributes["src"])
        if tag == "td" and ("data-key" in attributes or "data-mean-std-key" in attributes):
            self._cell = {**attributes, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        if tag == "figure":
            self._figure = None


def parse(text: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    return parser


def walk(tree: dict, key: str):
    node = tree
    for part in key.split("/"):
        node = node[part]  # a KeyError here means the report shows a number that is not in the JSON
    return node


def printed(value, digits: int) -> str:
    """The JSON value rounded the way a reader expects: n/a for an undefined (null) score."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{round(value, digits):.{digits}f}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, replace(DemoConfig.quick(), seeds=2, finetune_steps=2))  # two seeds: the mean ± std rows
    return out


@pytest.fixture(scope="module")
def results(demo) -> dict:
    return json.loads((demo / "metrics.json").read_text())


@pytest.fixture(scope="module")
def report(demo) -> ReportParser:
    return parse((demo / "report.html").read_text(encoding="utf-8"))


def test_report_is_self_contained(demo, report):
    text = (demo / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    for tag, attributes in report.tags:
        assert tag not in ("script", "link", "iframe", "object"), f"<{tag}> in a self-contained report"
        for name in ("src", "href"):
            if name in attributes:
                assert attributes[name].startswith("data:image/png;base64,"), f"<{tag} {name}={attributes[name][:40]}>"
    images = [attributes["src"] for tag, attributes in report.tags if tag == "img"]
    assert len(images) >= 9
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def test_report_has_every_section(report, results):
    for section in ("data", "ecg-codes", "pretraining", "reconstruction", "codebook", "finetuning", "roc", "metrics",
                    "timings"):
        assert section in report.ids, section
    figures = ["figure-ecg-codes", "figure-loss-curves", "figure-patches", "figure-code-usage"]
    for task in ("anomaly", "arrhythmia"):
        assert results["tasks"][task]["status"] == "ran", results["tasks"][task].get("reason")
        figures += [f"figure-roc-{task}", f"figure-confusion-{task}"]
    for figure in figures:
        assert len(report.figure_images.get(figure, [])) == 1, figure
    for table in ("sources", "metrics-table", "per-class-table", "codebook-figures", "timings-table"):
        assert table in report.ids, table


def test_every_number_in_the_report_equals_its_json(demo, report, results):
    for cell in report.cells:
        digits = int(cell["data-digits"])
        if "data-mean-std-key" in cell:
            aggregate = walk(results, cell["data-mean-std-key"])
            assert cell["text"] == f"{printed(aggregate['mean'], digits)} ± {printed(aggregate['std'], digits)}", cell
            continue
        assert cell["text"] == printed(walk(results, cell["data-key"]), digits), cell
        if "data-source" in cell:
            source = json.loads((demo / cell["data-source"]).read_text())
            assert cell["text"] == printed(walk(source, cell["data-source-key"]), digits), cell
    keys = {cell["data-key"] for cell in report.cells if "data-key" in cell}
    aggregates = {cell["data-mean-std-key"] for cell in report.cells if "data-mean-std-key" in cell}
    # every headline score of every task and seed, both anomaly orientations, and per class over the seeds
    for task, info in results["tasks"].items():
        for seed in info["seeds"]:
            for metric in ("accuracy", "auroc", "f1_weighted", "f1_macro"):
                assert f"tasks/{task}/seeds/{seed}/{metric}" in keys
        for name in info["classes"]:
            shown = f"tasks/{task}/summary/per_class/{name}/f1" in aggregates
            assert shown == (info["counts"]["test"][name] > 0), name
    assert {"tasks/anomaly/seeds/seed-0/auroc_normal_positive", "tasks/anomaly/seeds/seed-0/auroc_abnormal_positive"} <= keys
    for task, info in results["tasks"].items():  # the seeds' ensemble, as the run folder's model scored it
        if len(info["seeds"]) > 1:
            assert info["ensemble"] == json.loads((demo / task / "ensemble" / "test" / "metrics.json").read_text())
            assert {f"tasks/{task}/ensemble/accuracy", f"tasks/{task}/ensemble/f1_macro"} <= keys
    assert results["tasks"]["anomaly"]["seeds"]["seed-0"]["positive"] == "normal"  # the paper's orientation
    for stage in results["timings_s"]:
        assert f"timings_s/{stage}" in keys


def test_metrics_json_copies_the_evaluation_files(demo, report, results):
    for task, info in results["tasks"].items():
        per_seed = [json.loads((demo / task / seed / "test" / "metrics.json").read_text()) for seed in info["seeds"]]
        assert list(info["seeds"].values()) == per_seed
        for seed in info["seeds"]:
            for name in ("roc_pr.png", "confusion.png", "predictions.csv"):
                assert (demo / task / seed / "test" / name).is_file()
        accuracy = np.array([m["accuracy"] for m in per_seed])
        assert info["summary"]["accuracy"]["mean"] == pytest.approx(accuracy.mean())
        assert info["summary"]["accuracy"]["std"] == pytest.approx(accuracy.std(ddof=1))
    shown = {cell["data-mean-std-key"] for cell in report.cells if "data-mean-std-key" in cell}
    assert {"tasks/anomaly/summary/accuracy", "tasks/arrhythmia/summary/f1_weighted"} <= shown


def test_class_counts_and_held_out_tokens_match_the_manifest(demo, results):
    import pandas as pd

    manifest = pd.read_parquet(demo / "store" / "manifest.parquet")
    held_out = manifest[manifest["split"].isin(["val", "test"])]
    # 10 s windows tiled over each record: one token per lead and started second
    tokens = int((held_out["n_leads"] * np.ceil(held_out["n_samples"] / 300)).sum())
    for model in ("shipped", "demo"):
        assert results["codebook"][model]["metrics"]["held_out_tokens"] == tokens
    assert sum(results["data"]["per_source"][s]["records"] for s in results["data"]["per_source"]) == len(manifest)
    anomaly = results["tasks"]["anomaly"]["counts"]
    normal_test = sum(1 for labels in manifest.loc[manifest["split"] == "test", "labels"]
                      if labels and set(labels.split(";")) <= {"426783006", "427393009"})
    assert anomaly["test"]["normal"] == normal_test


def test_pretraining_logs_and_codes_of_the_drawn_ecg(demo, results):
    for stage in ("tokenizer", "backbone"):
        info = results["pretraining"][stage]
        assert math.isfinite(info["first_loss"]) and math.isfinite(info["last_loss"])
        assert info["parameters"] > 0
    drawn = results["ecg_codes"]
    # reference: the record read by wfdb itself, tokenized by the shipped model
    record = wfdb.rdrecord(str(embedded_data_dir() / "cinc2021" / drawn["record_id"]))
    codes = AnyECG.from_pretrained().tokenize(record.p_signal.T.astype(np.float32), record.fs, record.sig_name)
    assert np.array_equal(codes, np.array(drawn["tokens"]))
    assert codes.shape == (12, 10)


def test_a_task_that_cannot_run_is_explained_not_fatal(results, demo):
    assert task_problem({"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}}) is None
    problem = task_problem({"train": {"normal": 10, "abnormal": 28}, "test": {"normal": 0, "abnormal": 6}})
    assert problem is not None and "abnormal" in problem
    skipped = copy.deepcopy(results)
    skipped["tasks"]["anomaly"] = {**skipped["tasks"]["anomaly"], "status": "skipped", "reason": problem, "seeds": {}}
    page = render_report(skipped, demo)
    parsed = parse(page)
    assert "figure-roc-anomaly" not in parsed.ids and "figure-roc-arrhythmia" in parsed.ids
    assert "not run: needs two classes" in page


def test_code_usage_figures_against_hand_computed_values(tmp_path):
    assert code_perplexity(np.array([5, 5, 0, 0])) == pytest.approx(2.0)
    assert code_perplexity(np.full(64, 3)) == pytest.approx(64.0)
    p = np.array([0.5, 0.25, 0.25])
    assert code_perplexity(np.array([2, 1, 1])) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    path = plot_code_usage(np.array([9, 0, 3, 1]), tmp_path / "usage.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_cli_demo_options():
    args = build_parser().parse_args(["demo", "--out", "anyecg-demo"])  # the README quick start
    assert args.out == Path("anyecg-demo") and not args.quick
    assert build_parser().parse_args(["demo", "--quick"]).quick
