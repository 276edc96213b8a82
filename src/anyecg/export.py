"""ONNX export of the AnyECG stage-2 encoder, checked against PyTorch with onnxruntime.

    report = export_onnx("runs/pretrain/final", "anyecg.onnx")   # None: the shipped anyecg-small

The ONNX graph takes *preprocessed* input, exactly what `Backbone.forward_features` takes:

    patches  float32 [B, L, P, S]  1 s patches (S = 300 samples at 300 Hz) of recipe-cleaned,
                                   normalised signal, zero where padded
    lead_ids int64   [B, L]        indices into `anyecg.signal.leads.CANONICAL_LEADS`
    pad_mask bool    [B, L, P]     True where a token is padding (absent lead, second past the end)

and returns

    pooled   float32 [B, D]        recording embedding: mean of the features over real tokens
    features float32 [B, L, P, D]  contextual token features, zero at padding

B, L and P are dynamic (L * P at most the model's 1024-token budget, which the graph does not
check). Filtering, resampling, wavelet denoising, normalisation and patching stay in Python: the
recipe that produced the training data is written next to the model as FILE.recipe.json (and in
the model's metadata), and `anyecg.pretrained.token_windows` applies it to a raw recording. A model
pretrained on windows of a fixed length says so in its metadata (`anyecg.window_s`): feed windows
no longer than that, as `AnyECG.embed` does.

After export the file is run with onnxruntime on real embedded recordings (MIT-BIH 100 as a batch
of three 2-lead windows, one shorter and padded; CinC 2021 E07500 as one 12-lead record), at shapes
other than the one traced, and compared with the PyTorch model; a difference above the tolerance
raises `ExportMismatch`.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from anyecg.pretrained import AnyECG, token_windows
from anyecg.signal.recipe import Recipe
from anyecg.training.checkpoint import CONFIG_FILE

INPUT_NAMES = ("patches", "lead_ids", "pad_mask")
OUTPUT_NAMES = ("pooled", "features")  # "embedding" would clash with a node name inside the graph
DEFAULT_TOLERANCE = 1e-4  # max abs difference (ONNX vs PyTorch) accepted, on z-scored input


class ExportMismatch(ValueError):
    """The exported graph's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class CheckCase:
    """One verification input: a batch as the encoder takes it, and where it came from."""

    name: str
    patches: Tensor  # [B, L, P, S] float32
    lead_ids: Tensor  # [B, L] int64
    pad_mask: Tensor  # [B, L, P] bool

    @property
    def shape(self) -> list[int]:
        """[B, L, P]"""
        return list(self.pad_mask.shape)

    def onnx_feed(self) -> dict[str, np.ndarray]:
        return {"patches": self.patches.numpy(), "lead_ids": self.lead_ids.numpy(), "pad_mask": self.pad_mask.numpy()}


def require_export_extra() -> None:
    """Fail early, naming the extra, when the ONNX packages are not installed."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'anyecg[export]'")


class EncoderGraph(nn.Module):
    """What the ONNX file computes: `Backbone.forward_features` plus `Backbone.pool`, traceable.

    Two differences from calling the backbone, neither changing the result:
    - attention runs on the dense CMA path. The structured path is a chunked autograd.Function
      whose Python loop depends on the input shape, so torch.export cannot trace it for dynamic
      shapes; the dense path is an exact reference implementation of the same attention (a boolean
      N x N mask in scaled_dot_product_attention), its cost quadratic in N = L * P but bounded by
      the 1024-token budget.
    - `check_inputs` is not run inside the graph: it reads lead-id values (a data-dependent branch
      torch.export rejects). Callers validate in Python; onnxruntime rejects lead ids out of range.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(backbone).eval()  # the caller's model keeps its attention path
        for block in self.backbone.blocks:
            block.attn.impl = "dense"
        self.eval()  # an inference graph: no dropout

    def forward(self, patches: Tensor, lead_ids: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        B, L, P, _ = patches.shape
        backbone = self.backbone
        pad = pad_mask.flatten(1)  # [B, N]
        x = backbone.patch_embed(patches, lead_ids)  # [B, N, D]
        for block in backbone.blocks:
            x = block(x, (L, P), pad)  # [B, N, D]
        features = backbone.norm(x).masked_fill(pad[..., None], 0.0)  # [B, N, D]
        pooled = backbone.pool(features, pad_mask)  # [B, D]
        return pooled, features.reshape(B, L, P, -1)  # [B, D], [B, L, P, D]


def recipe_path(onnx_path: str | Path) -> Path:
    """FILE.recipe.json beside FILE.onnx."""
    return Path(onnx_path).with_suffix(".recipe.json")


def load_model(model: str | Path | None) -> AnyECG:
    """A stage-2 AnyECG checkpoint folder (or run folder with final/), or the shipped one for None."""
    if model is not None:
        directory = Path(model)
        if not directory.is_dir():
            raise FileNotFoundError(f"model folder {directory} does not exist")
        if not (directory / CONFIG_FILE).is_file() and not (directory / "final" / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory} is not an AnyECG checkpoint (no {CONFIG_FILE} in it or in final/)")
    loaded = AnyECG.from_pretrained(model)
    if loaded.backbone is None:
        raise ValueError(f"{model}: a stage-1 (tokenizer only) checkpoint; ONNX export needs a stage-2 encoder")
    return loaded


def _trace_inputs(patch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Example inputs for tracing: every dynamic size >= 2 (torch.export specialises sizes 0 and 1)
    and unlike the check shapes, so the checks exercise the dynamic axes."""
    B, L, P = 2, 3, 5
    lead_ids = torch.arange(L).repeat(B, 1)  # [B, L]
    return torch.zeros(B, L, P, patch_size), lead_ids, torch.zeros(B, L, P, dtype=torch.bool)


def _embedded_record(name: str):
    from anyecg.demo import embedded_data_dir
    from anyecg.io import read_record

    return read_record(embedded_data_dir() / name)


def stack_windows(windows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Batch single-window batches of one lead set ([1, L, P_i, S] each), zero-padding to the
    longest window and flagging the padded seconds in pad_mask."""
    n_patches = max(w["patches"].shape[2] for w in windows)
    _, L, _, S = windows[0]["patches"].shape
    patches = torch.zeros(len(windows), L, n_patches, S)  # [B, L, P, S]
    pad_mask = torch.ones(len(windows), L, n_patches, dtype=torch.bool)  # [B, L, P]
    for b, window in enumerate(windows):
        P = window["patches"].shape[2]
        patches[b, :, :P] = window["patches"][0]
        pad_mask[b, :, :P] = window["pad_mask"][0]
    lead_ids = torch.cat([w["lead_ids"] for w in windows])  # [B, L]
    return {"patches": patches, "lead_ids": lead_ids, "pad_mask": pad_mask}


def check_cases(recipe: Recipe) -> list[CheckCase]:
    """Real inputs at two shapes unlike the traced one: MIT-BIH 100 as a batch of three 2-lead
    windows (12 s, 12 s and a padded 8 s), and the 12-lead CinC 2021 record E07500 alone."""
    mitdb = _embedded_record("mitdb/100.hea")
    seconds = 32
    signal = mitdb.signal[:, : int(seconds * mitdb.fs)]  # [2, 32 s]
    windows = token_windows(signal, mitdb.fs, mitdb.raw_leads or mitdb.leads, recipe, window_s=12)
    mit = stack_windows(windows)  # [3, 2, 12, S], last window padded after 8 s
    cinc = _embedded_record("cinc2021/E07500.hea")
    [one] = token_windows(cinc.signal, cinc.fs, cinc.raw_leads or cinc.leads, recipe, window_s=85)
    return [
        CheckCase(f"mitdb/100 first {seconds} s in 12 s windows", **mit),
        CheckCase("cinc2021/E07500", **one),
    ]


@torch.no_grad()
def check_onnx(onnx_path: str | Path, backbone: nn.Module, cases: list[CheckCase], tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Run the ONNX file with onnxruntime on each case and compare with the PyTorch backbone
    (its own attention path, `forward_features` then `pool`); returns the largest absolute
    difference over both outputs, or raises ExportMismatch naming the case above `tolerance`."""
    require_export_extra()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for case in cases:
        B, L, P = case.shape
        features = backbone.forward_features(case.patches, case.lead_ids, case.pad_mask)  # [B, N, D]
        expected = {
            "pooled": backbone.pool(features, case.pad_mask).numpy(),  # [B, D]
            "features": features.reshape(B, L, P, -1).numpy(),  # [B, L, P, D]
        }
        got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), case.onnx_feed())))
        for name in OUTPUT_NAMES:
            if got[name].shape != expected[name].shape:
                raise ExportMismatch(
                    f"{onnx_path}: output {name} has shape {got[name].shape} for {case.name} (B, L, P = {case.shape}), "
                    f"PyTorch gives {expected[name].shape}"
                )
            diff = float(np.abs(got[name] - expected[name]).max())
            if not diff <= tolerance:  # also catches NaN
                raise ExportMismatch(
                    f"{onnx_path}: output {name} differs from PyTorch by {diff:.3g} (> {tolerance:g}) "
                    f"on {case.name} (B, L, P = {case.shape})"
                )
            worst = max(worst, diff)
    return worst


def _write_metadata(onnx_path: Path, loaded: AnyECG) -> int:
    """Store the recipe and the input contract in the model's metadata; returns its opset."""
    import onnx

    proto = onnx.load(str(onnx_path))
    metadata = {
        "anyecg.preset": loaded.preset or "",
        "anyecg.recipe": loaded.recipe.to_json(),
        "anyecg.inputs": "patches float32 [B, L, P, S] preprocessed 1 s patches; lead_ids int64 [B, L] "
        "(CANONICAL_LEADS indices); pad_mask bool [B, L, P] (True = padding); L * P <= "
        f"{loaded.backbone.config.max_tokens}",
        "anyecg.outputs": "pooled float32 [B, D] mean over real tokens; features float32 [B, L, P, D] zero at padding",
    }
    if loaded.window_s is not None:  # longer windows reach time positions pretraining never trained
        metadata["anyecg.window_s"] = str(loaded.window_s)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(onnx_path))
    return max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def _export_graph(graph: EncoderGraph, onnx_path: Path) -> None:
    """torch.onnx (dynamo) export with dynamic batch, leads and patches."""
    config = graph.backbone.config
    batch = torch.export.Dim("batch", min=1)
    leads = torch.export.Dim("leads", min=1, max=config.max_tokens)
    patches = torch.export.Dim("patches", min=1, max=config.max_tokens)  # time_embed covers max_tokens seconds
    with warnings.catch_warnings():
        # torch.onnx warns that each axis name "will not be used" when it names its own Dim; the
        # names are used (the graph's inputs carry batch, leads, patches).
        warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
        torch.onnx.export(
            graph,
            _trace_inputs(config.patch_size),
            str(onnx_path),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={
                "patches": {0: batch, 1: leads, 2: patches},
                "lead_ids": {0: batch, 1: leads},
                "pad_mask": {0: batch, 1: leads, 2: patches},
            },
            external_data=False,  # one self-contained file; the encoder is far below protobuf's 2 GiB
            verbose=False,  # else the exporter prints its progress on stdout, where the CLI prints JSON
        )


def export_onnx(model: str | Path | None, onnx_path: str | Path, *, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Export the encoder of an AnyECG checkpoint (None: the shipped anyecg-small) to `onnx_path`,
    write its preprocessing recipe to FILE.recipe.json, and check the file against PyTorch.

    Returns {"onnx", "bytes", "opset", "checked_shapes" ([B, L, P] each), "max_abs_diff", "recipe"}.
    """
    require_export_extra()
    onnx_path = Path(onnx_path)
    if onnx_path.suffix != ".onnx":
        raise ValueError(f"--onnx must name a .onnx file, got {onnx_path}")
    loaded = load_model(model)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    _export_graph(EncoderGraph(loaded.backbone), onnx_path)
    opset = _write_metadata(onnx_path, loaded)
    recipe_file = recipe_path(onnx_path)
    recipe_file.write_text(loaded.recipe.to_json() + "\n")

    cases = check_cases(loaded.recipe)
    max_abs_diff = check_onnx(onnx_path, loaded.backbone, cases, tolerance)
    return {
        "onnx": str(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "opset": opset,
        "checked_shapes": [case.shape for case in cases],
        "max_abs_diff": max_abs_diff,
        "recipe": str(recipe_file),
    }
