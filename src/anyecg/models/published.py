"""The published ECGFounder and ECG-FM checkpoints, converted to anyecg networks with the same outputs.

    published = read_published("12_lead_ECGFounder.pth")   # or 1_lead_ECGFounder.pth,
    published.network, published.labels, published.recipe   # mimic_iv_ecg_physionet_pretrained.pt,
                                                             # mimic_iv_ecg_finetuned.pt
Files (read with `torch.load(weights_only=True)`: tensors, numpy data and plain containers, never
other pickled objects):

- ECGFounder (huggingface.co/PKUDigitalHealth/ECGFounder): `{"state_dict": Net1D state dict}`,
  names with or without `module.`. The architecture is read from the tensor shapes; the 12-lead
  file must have the 150 published outputs (`ECGFOUNDER_LABELS`). Net1D builds BatchNorm layers it
  does not use (`use_bn=False`); they must still hold their initial values.
- ECG-FM (huggingface.co/wanglab/ecg-fm): fairseq-signals checkpoints `{"cfg", "model", ...}`.
  `cfg["model"]["_name"]` `wav2vec2_cmsc` is the pretrained encoder with its pretraining modules
  (215 tensors at full size), `ecg_transformer_classifier` the fine-tuned encoder under `encoder.`
  plus the 17-label `proj` head (209 tensors). Both weight-norm namings of the positional
  convolution are read (`weight_g`/`weight_v` and `parametrizations.weight.original0/1`).

Every tensor of the file is used and every parameter of the network filled, or a ValueError names
the file and lists the mismatches.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from anyecg.models.contract import SignalContract, place_leads
from anyecg.models.ecgfm import ECGFM, ECGFMConfig, ECGFMPretrainer
from anyecg.models.ecgfounder import ECGFounder, ECGFounderConfig, load_reference_weights
from anyecg.models.published_labels import ECGFM_AGGREGATION, ECGFM_LABELS, ECGFOUNDER_LABELS
from anyecg.models.state import state_mismatches
from anyecg.signal.leads import STANDARD_12
from anyecg.signal.published import PUBLISHED_FS, ecgfm_windows, ecgfounder_windows
from anyecg.signal.recipe import Recipe

ECGFOUNDER_CLASSES_12_LEAD = len(ECGFOUNDER_LABELS)
PUBLISHED_PIPELINES = ("ecgfounder", "ecgfm")


@dataclass(frozen=True)
class PublishedRecipe:
    """The authors' preprocessing of a published model (`anyecg.signal.published`), stored as `recipe.json`."""

    published: str  # "ecgfounder" or "ecgfm": whose pipeline
    target_fs: int = PUBLISHED_FS

    def __post_init__(self) -> None:
        if self.published not in PUBLISHED_PIPELINES:
            raise ValueError(f"unknown published preprocessing {self.published!r}; known: {list(PUBLISHED_PIPELINES)}")
        if self.target_fs != PUBLISHED_FS:
            raise ValueError(f"the published models take {PUBLISHED_FS} Hz input, got target_fs {self.target_fs}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    def windows(
        self, signal: np.ndarray, fs: float, leads: list[str], contract: SignalContract
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x float32 [S, C, T], lead_mask bool [C]): a raw recording [L, T0] (mV) as the model's inputs."""
        x, lead_mask = place_leads(np.asarray(signal), leads, contract)  # [C, T0], absent leads zero
        if self.published == "ecgfounder":
            return ecgfounder_windows(x, fs, lead_mask, contract.n_samples), lead_mask
        return ecgfm_windows(x, fs, contract.n_samples), lead_mask


def recipe_from_json(text: str):
    """A `PublishedRecipe` when the JSON names one, else anyecg's own `Recipe`."""
    data = json.loads(text)
    return PublishedRecipe(**data) if "published" in data else Recipe.from_dict(data)


@dataclass
class Published:
    """A converted published checkpoint: the network (eval mode), its output names and the authors' preprocessing."""

    family: str  # "ecgfounder" or "ecgfm"
    network: nn.Module  # ECGFounder, or ECG-FM's encoder (ECGFM; with its 17-label head when fine-tuned)
    recipe: PublishedRecipe
    source: str  # the file it came from
    labels: tuple[str, ...] | None = None  # names of the outputs, in order (None: not a published head)
    aggregation: tuple[str, ...] | None = None  # per label, "mean" or "max" over a record's windows
    pretrainer: ECGFMPretrainer | None = field(default=None, repr=False)  # ECG-FM pretrained: encoder + quantiser, ...

    def config(self) -> dict[str, Any]:
        """The `config.json` of the converted checkpoint (see `FamilyModel`)."""
        config = {"family": self.family, "stage": "published", "source": Path(self.source).name,
                  "config": self.network.config.to_dict()}
        if self.labels is not None:
            config["labels"] = list(self.labels)
        if self.aggregation is not None:
            config["aggregation"] = list(self.aggregation)
        return config


def _numpy_data_types() -> list:
    """numpy arrays, scalars and dtypes: plain data that training loops leave in checkpoint metadata."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)]
    return [np.ndarray, np.dtype, core.multiarray.scalar, core.multiarray._reconstruct, *dtypes]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The file's contents through the safe unpickler: tensors, numpy data and plain containers, nothing executable."""
    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refused: the file holds pickled Python objects, which anyecg does not unpickle "
            f"(only tensors, numpy data and plain containers are read): {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(content, Mapping):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(content).__name__}")
    return dict(content)


def resolve_hub(name: str, cache_dir: str | Path | None = None) -> Path:
    """The local file of `hf://OWNER/REPO/FILE` in the Hugging Face cache (no download, no network)."""
    parts = name.removeprefix("hf://").split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"{name}: expected hf://OWNER/REPO/FILE, e.g. hf://wanglab/ecg-fm/mimic_iv_ecg_finetuned.pt")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise ImportError(f"{name}: hf:// names need huggingface_hub: pip install 'anyecg[hub]'") from None
    path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    if not isinstance(path, str):
        raise FileNotFoundError(
            f"{name} is not in the local Hugging Face cache; download it first: hf download {repo_id} {filename}"
        )
    return Path(path)


def read_published(path: str | Path) -> Published:
    """Convert an official ECGFounder (`.pth`) or ECG-FM (fairseq `.pt`) checkpoint file."""
    checkpoint = read_checkpoint(path)
    if "state_dict" in checkpoint:
        return convert_ecgfounder(checkpoint["state_dict"], str(path))
    if "model" in checkpoint and "cfg" in checkpoint:
        return convert_ecgfm(checkpoint, str(path))
    raise ValueError(
        f"{path}: neither an ECGFounder checkpoint ({{'state_dict': ...}}) nor an ECG-FM fairseq checkpoint "
        f"({{'cfg': ..., 'model': ...}}); top-level keys: {sorted(checkpoint)[:10]}"
    )


# ---------------------------------------------------------------------------------------------
# ECGFounder

_NET1D_BLOCK = re.compile(r"stage_list\.(\d+)\.block_list\.(\d+)\.conv3\.conv\.weight")


def ecgfounder_config_from_state(state: Mapping[str, Tensor], source: str) -> ECGFounderConfig:
    """The Net1D architecture the tensor shapes describe (stride 2 and no BatchNorm, as published)."""
    try:
        stem = state["first_conv.conv.weight"]  # [F0, C, k]
        blocks: dict[int, list[int]] = {}
        for name in state:
            match = _NET1D_BLOCK.fullmatch(name)
            if match:
                blocks.setdefault(int(match[1]), []).append(int(match[2]))
        stages = range(len(blocks))
        if sorted(blocks) != list(stages) or not blocks:
            raise KeyError(f"stage_list.* (stages found: {sorted(blocks)})")
        first = [f"stage_list.{s}.block_list.0." for s in stages]
        filter_list = [int(state[p + "conv3.conv.weight"].shape[0]) for p in first]
        middle = int(state[first[0] + "conv1.conv.weight"].shape[0])
        groups = middle // int(state[first[0] + "conv2.conv.weight"].shape[1])
        head = state.get("dense.weight")
        if head is None:
            raise KeyError("dense.weight")
        se_hidden = int(state[first[0] + "se_fc1.weight"].shape[0])
    except KeyError as missing:
        raise ValueError(f"{source}: not a Net1D state dict: no {missing.args[0]}") from None
    leads = STANDARD_12 if stem.shape[1] == 12 else ("I",) if stem.shape[1] == 1 else None
    if leads is None:
        raise ValueError(f"{source}: the published ECGFounder models take 12 leads or lead I, this one {stem.shape[1]} channels")
    try:
        return ECGFounderConfig(
            leads=leads, base_filters=int(stem.shape[0]), filter_list=tuple(filter_list),
            m_blocks_list=tuple(len(blocks[s]) for s in stages), kernel_size=int(stem.shape[2]),
            groups_width=filter_list[0] // groups, ratio=middle / filter_list[0],
            se_reduction=filter_list[0] // se_hidden, num_classes=int(head.shape[0]),
        )
    except ValueError as error:
        raise ValueError(f"{source}: the tensor shapes describe no Net1D anyecg can build: {error}") from None


def convert_ecgfounder(state_dict: Mapping[str, Tensor], source: str) -> Published:
    state = {name.removeprefix("module."): value for name, value in state_dict.items()}
    config = ecgfounder_config_from_state(state, source)
    if len(config.leads) == 12 and config.num_classes != ECGFOUNDER_CLASSES_12_LEAD:
        raise ValueError(
            f"{source}: the published 12-lead ECGFounder has {ECGFOUNDER_CLASSES_12_LEAD} outputs, "
            f"this head has {config.num_classes} (dense.weight {tuple(state['dense.weight'].shape)})"
        )
    network = ECGFounder(config)
    load_reference_weights(network, state, source=source)
    labels = ECGFOUNDER_LABELS if config.num_classes == ECGFOUNDER_CLASSES_12_LEAD else None
    return Published("ecgfounder", network.eval(), PublishedRecipe("ecgfounder"), source, labels)


# ---------------------------------------------------------------------------------------------
# ECG-FM

# cfg["model"] fields that only matter for training (masking, dropout, negatives, data and weight
# paths, ...), in fairseq-signals' current configs and in its earlier versions' (w2v_path, ...).
_TRAINING_ONLY = {
    "_name", "activation_dropout", "all_gather", "apply_mask", "args", "attention_dropout", "codebook_negatives",
    "cross_sample_negatives", "data", "dropout", "dropout_features", "dropout_input", "encoder_layerdrop",
    "feature_grad_mult", "filter", "final_dropout", "freeze_finetune_updates", "latent_temp", "layerdrop",
    "load_pretrained_weights", "logit_temp", "mask_channel_before", "mask_channel_length", "mask_channel_min_space",
    "mask_channel_other", "mask_channel_prob", "mask_channel_selection", "mask_length", "mask_min_space", "mask_other",
    "mask_prob", "mask_selection", "model_path", "negatives_from_everywhere", "no_mask_channel_overlap",
    "no_mask_overlap", "no_pretrained_weights", "normalize", "num_negatives", "pretrained_model_path", "saliency",
    "same_quantizer", "w2v_args", "w2v_path",
}
_ARCHITECTURE = {
    "conv_bias", "conv_feature_layers", "conv_pos", "conv_pos_groups", "encoder_attention_heads", "encoder_embed_dim",
    "encoder_ffn_embed_dim", "encoder_layers", "extractor_mode", "final_dim", "in_d", "latent_dim", "latent_groups",
    "latent_vars", "layer_norm_first", "num_labels", "quantize_input", "quantize_targets", "target_glu",
}
ECGFM_MODELS = ("wav2vec2_cmsc", "ecg_transformer_classifier")


def _literal_layers(text: str, source: str) -> tuple[tuple[int, int, int], ...]:
    """`conv_feature_layers` such as "[(256, 2, 2)] * 4", read without eval: list literals, + and *."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add)):
            left, right = value(node.left), value(node.right)
            return left * right if isinstance(node.op, ast.Mult) else left + right
        return ast.literal_eval(node)

    try:
        layers = value(ast.parse(str(text), mode="eval").body)
        return tuple((int(c), int(k), int(s)) for c, k, s in layers)
    except (ValueError, TypeError, SyntaxError):
        raise ValueError(f"{source}: cfg['model']['conv_feature_layers'] = {text!r} is not a list of (dim, kernel, stride)") from None


def ecgfm_config_from_cfg(cfg: Mapping[str, Any], source: str) -> tuple[str, ECGFMConfig]:
    """(model name, ECGFMConfig) from a fairseq-signals `cfg["model"]`; a value our network cannot
    reproduce raises, naming the field."""
    name = cfg.get("_name")
    if name not in ECGFM_MODELS:
        raise ValueError(f"{source}: cfg['model']['_name'] = {name!r}; anyecg converts {list(ECGFM_MODELS)}")
    unknown = sorted(set(cfg) - _TRAINING_ONLY - _ARCHITECTURE)
    if unknown:
        raise ValueError(f"{source}: unsupported cfg['model'] fields {unknown}: anyecg cannot tell how they change the network")
    pretrained = name == "wav2vec2_cmsc"
    conv_layers = _literal_layers(cfg.get("conv_feature_layers", "[(256, 2, 2)] * 4"), source)
    dim = int(cfg.get("encoder_embed_dim", 768))
    final_dim = int(cfg.get("final_dim", 0))
    required = {
        "extractor_mode": "default",  # a GroupNorm in the first conv block only
        "in_d": 12,
        "quantize_input": False,
        "target_glu": False,
    }
    if pretrained:
        required["quantize_targets"] = True
    for key, supported in required.items():
        if key in cfg and cfg[key] != supported:
            raise ValueError(f"{source}: cfg['model']['{key}'] = {cfg[key]!r} is not supported (anyecg's ECG-FM: {supported!r})")
    if conv_layers[-1][0] == dim:
        raise ValueError(
            f"{source}: cfg['model']['encoder_embed_dim'] = {dim} equals the conv output width, so fairseq has no "
            "post_extract_proj; not supported (anyecg's ECG-FM always projects)"
        )
    if pretrained and (final_dim <= 0 or int(cfg.get("latent_dim", 0)) not in (0, final_dim)):
        raise ValueError(
            f"{source}: cfg['model']['latent_dim'] = {cfg.get('latent_dim')} with final_dim {final_dim} is not supported "
            "(anyecg's quantiser has codes of final_dim values)"
        )
    values = {
        "conv_layers": conv_layers, "conv_bias": bool(cfg.get("conv_bias", False)), "dim": dim,
        "depth": int(cfg.get("encoder_layers", 12)), "n_heads": int(cfg.get("encoder_attention_heads", 12)),
        "ffn_dim": int(cfg.get("encoder_ffn_embed_dim", 3072)), "norm_first": bool(cfg.get("layer_norm_first", False)),
        "pos_conv_kernel": int(cfg.get("conv_pos", 128)), "pos_conv_groups": int(cfg.get("conv_pos_groups", 16)),
    }
    if pretrained:
        values.update(final_dim=final_dim, latent_groups=int(cfg.get("latent_groups", 2)),
                      latent_entries=int(cfg.get("latent_vars", 320)))
    else:
        values.update(num_classes=int(cfg["num_labels"]))
    try:
        return name, ECGFMConfig(**values)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def _ecgfm_name(name: str) -> str | None:
    """Our name (relative to the encoder) of a fairseq ECG-FM encoder tensor, or None when not one."""
    rules = [
        (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_encoder.blocks.\1.0.\2"),
        (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_encoder.blocks.0.1.\1"),
        (r"post_extract_proj\.(weight|bias)", r"feature_proj.\1"),
        (r"layer_norm\.(weight|bias)", r"feature_norm.\1"),
        (r"conv_pos\.pos_conv\.0\.bias", r"transformer.pos_conv.conv.bias"),
        (r"conv_pos\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
         r"transformer.pos_conv.conv.parametrizations.weight.original0"),
        (r"conv_pos\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
         r"transformer.pos_conv.conv.parametrizations.weight.original1"),
        (r"encoder\.layers\.(\d+)\.self_attn\.([qkv]_proj|out_proj)\.(weight|bias)", r"transformer.layers.\1.attn.\2.\3"),
        (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"transformer.layers.\1.attn_norm.\2"),
        (r"encoder\.layers\.(\d+)\.(fc[12])\.(weight|bias)", r"transformer.layers.\1.\2.\3"),
        (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"transformer.layers.\1.ffn_norm.\2"),
        (r"encoder\.layer_norm\.(weight|bias)", r"transformer.norm.\1"),
    ]
    for pattern, target in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name)
    return None


def ecgfm_state(model_state: Mapping[str, Tensor], pretrained: bool, config: ECGFMConfig) -> tuple[dict, list[str]]:
    """(our state dict, names not recognised): fairseq tensors renamed, the quantiser's codebook
    [1, G * V, d] reshaped to [G, V, d]. Pretrained names are the pretrainer's (`encoder.` + ...)."""
    converted, unknown = {}, []
    for name, value in model_state.items():
        if pretrained:
            if name in ("mask_emb",) or name.startswith(("project_q.", "final_proj.", "quantizer.weight_proj.")):
                converted[name] = value
                continue
            if name == "quantizer.vars":
                converted["quantizer.codebook"] = value.reshape(config.latent_groups, config.latent_entries, -1)
                continue
            ours = _ecgfm_name(name)
            prefix = "encoder."
        else:
            if name == "encoder.mask_emb":  # kept by fine-tuning with apply_mask; the classifier never reads it
                continue
            if name.startswith("proj."):
                converted["head." + name.removeprefix("proj.")] = value
                continue
            ours = _ecgfm_name(name.removeprefix("encoder.")) if name.startswith("encoder.") else None
            prefix = ""
        if ours is None:
            unknown.append(name)
        else:
            converted[prefix + ours] = value
    return converted, unknown


def load_strict(network: nn.Module, state: Mapping[str, Tensor], unknown: list[str], source: str) -> None:
    """Fill every parameter of `network` from `state`, or raise listing unknown, missing and misshaped names."""
    own = network.state_dict()
    # training counters the converted state does not carry keep the network's own value (0)
    counters = {k: v for k, v in own.items() if k.endswith("num_updates")}
    expected = {k: v for k, v in own.items() if k not in counters}
    missing, unexpected, misshaped = state_mismatches(expected, state)
    unexpected = sorted(set(unknown) | set(unexpected))
    misshaped = [f"{k}: {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in misshaped]
    if missing or unexpected or misshaped:
        raise ValueError(
            f"{source} does not match the network its cfg describes: unexpected {unexpected[:10]}, "
            f"missing {missing[:10]}, misshaped {misshaped[:10]}"
        )
    network.load_state_dict({**counters, **state}, strict=True)


def convert_ecgfm(checkpoint: Mapping[str, Any], source: str) -> Published:
    cfg = checkpoint["cfg"]
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("model"), Mapping):
        raise ValueError(f"{source}: cfg['model'] is missing or not a dict")
    name, config = ecgfm_config_from_cfg(cfg["model"], source)
    model_state = checkpoint["model"]
    if name == "wav2vec2_cmsc":
        pretrainer = ECGFMPretrainer(config)
        state, unknown = ecgfm_state(model_state, True, pretrainer.config)
        load_strict(pretrainer, state, unknown, source)
        return Published("ecgfm", pretrainer.encoder.eval(), PublishedRecipe("ecgfm"), source, pretrainer=pretrainer.eval())
    network = ECGFM(config)
    state, unknown = ecgfm_state(model_state, False, config)
    load_strict(network, state, unknown, source)
    published_head = config.num_classes == len(ECGFM_LABELS)
    return Published(
        "ecgfm", network.eval(), PublishedRecipe("ecgfm"), source,
        labels=ECGFM_LABELS if published_head else None,
        aggregation=tuple(ECGFM_AGGREGATION[label] for label in ECGFM_LABELS) if published_head else None,
    )
