"""Presets: paper sizes within 5% (counted on the meta device, checked against a closed-form
count), the listing the CLI prints, and a forward/backward of every CPU-size preset through the
whole two-stage pipeline."""

from __future__ import annotations

import pytest
import torch

from anyecg.models.presets import (
    PRESETS,
    backbone_config,
    build_backbone,
    build_tokenizer,
    count_parameters,
    list_presets,
    tokenizer_config,
)
from anyecg.signal.leads import LEAD_INDEX, STANDARD_12

PAPER_SIZES = {"anyecg-b": 254e6, "anyecg-l": 500e6, "anyecg-xl": 1.7e9}


def closed_form_backbone_parameters(name: str) -> int:
    """Backbone parameters from the config alone: temporal conv stack, embeddings, blocks, head."""
    c = backbone_config(name)
    d, ch, hidden, head_dim = c.dim, c.conv_channels, int(c.dim * c.mlp_ratio), c.dim // c.n_heads
    conv_length = (c.patch_size + 2 * 7 - 15) // 8 + 1  # kernel 15, stride 8, padding 7
    temporal = (15 * ch + ch) + 2 * ch + 2 * ((3 * ch * ch + ch) + 2 * ch) + (ch * conv_length * d + d)
    embeddings = c.max_tokens * d + 16 * d + d  # tau, sigma, mask token
    embeddings += (2 * d + d) if c.amplitude_inputs else 0  # patch log-RMS and mean -> d
    attention = 3 * d * d + 4 * head_dim + d * d + d  # qkv (no bias), QK LayerNorms, output projection
    mlp = d * hidden + hidden + hidden * d + d
    block = 2 * d + attention + 2 * d + mlp
    return temporal + embeddings + c.depth * block + 2 * d + (d * c.num_codes + c.num_codes)


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_paper_sizes_within_five_percent(name):
    counts = count_parameters(name)
    assert counts["backbone"] == closed_form_backbone_parameters(name)
    assert abs(counts["backbone"] / PAPER_SIZES[name] - 1) < 0.05
    # Counting the frozen tokenizer as well would stay within 5% too.
    assert abs((counts["backbone"] + counts["tokenizer"]) / PAPER_SIZES[name] - 1) < 0.05


def test_meta_device_allocates_nothing():
    with torch.device("meta"):
        model = build_backbone("anyecg-xl")
    assert all(p.device.type == "meta" for p in model.parameters())


def test_list_presets_entries():
    entries = {entry["name"]: entry for entry in list_presets()}
    assert set(entries) == set(PRESETS)
    for name, entry in entries.items():
        assert entry["family"] == "anyecg"
        assert entry["parameters"] == count_parameters(name)["backbone"]
        assert entry["paper_parameters"] == (int(PAPER_SIZES[name]) if name in PAPER_SIZES else None)
    assert entries["anyecg-tiny"]["parameters"] < entries["anyecg-small"]["parameters"] < 5e6
    assert entries["anyecg-b"]["parameters"] < entries["anyecg-l"]["parameters"] < entries["anyecg-xl"]["parameters"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tokenizer_and_backbone_share_the_codebook_size(name):
    assert tokenizer_config(name).num_codes == backbone_config(name).num_codes


def test_unknown_names_and_fields_are_reported():
    with pytest.raises(KeyError, match="anyecg-tiny"):
        build_backbone("anyecg-huge")
    with pytest.raises(TypeError):
        backbone_config("anyecg-tiny", width=3)
    assert backbone_config("anyecg-tiny", mask_ratio=0.3).mask_ratio == 0.3


def _batch(n_leads: int, n_patches: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n_leads)
    patches = torch.randn(2, n_leads, n_patches, 300, generator=g).cumsum(-1) * 0.05  # ECG-scale random walk
    pad_mask = torch.zeros(2, n_leads, n_patches, dtype=torch.bool)
    pad_mask[1, :, -1] = True
    if n_leads > 1:
        pad_mask[1, 0] = True
    return {
        "patches": patches.masked_fill(pad_mask[..., None], 0.0),
        "lead_ids": torch.tensor([LEAD_INDEX[n] for n in STANDARD_12[:n_leads]]).repeat(2, 1),
        "pad_mask": pad_mask,
        "age": torch.tensor([40.0, 71.0]),
        "has_age": torch.tensor([True, True]),
        "sex": torch.tensor([0, 1]),
        "has_sex": torch.tensor([True, False]),
    }


@pytest.mark.parametrize("name", ["anyecg-tiny", "anyecg-small"])
@pytest.mark.parametrize("n_leads", [1, 2, 12])
def test_two_stage_forward_backward(name, n_leads):
    torch.manual_seed(0)
    batch = _batch(n_leads)
    tokenizer = build_tokenizer(name).train()
    stage1 = tokenizer(batch)
    assert torch.isfinite(stage1.loss)
    stage1.loss.backward()
    assert all(p.grad is not None for p in tokenizer.parameters() if p.requires_grad)  # EMA codes have none

    codes = tokenizer.eval().encode(batch["patches"], batch["lead_ids"], batch["pad_mask"])
    backbone = build_backbone(name)
    stage2 = backbone({**batch, "codes": codes}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(stage2.loss) and stage2.n_masked > 0
    stage2.loss.backward()
    assert all(p.grad is not None for p in backbone.parameters())
    embedding = backbone.embed(batch["patches"], batch["lead_ids"], batch["pad_mask"])
    assert embedding.shape == (2, backbone.config.dim) and torch.isfinite(embedding).all()
