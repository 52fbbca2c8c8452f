"""LoRA networks (kohya, LDM-named kohya, diffusers/peft) on the toy UNet and CLIP text encoder.

Oracles: hand-computed ``up @ down * alpha / rank`` and convolution composition for the deltas;
the base weights themselves for removal (bit-identical); diffusers' own kohya conversion
(``lora_state_dict`` + its peft key conversion and ``get_peft_kwargs`` alpha) applied with
peft's delta formula for parity; and, when peft is installed, diffusers' ``load_lora_weights``.
Merged vs run-time: both patch the weights through the same float32 sum, so they agree exactly;
the test allows 1e-5 relative (max abs difference / max abs output).
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import sdrt
from sdrt.loaders.lora import apply_networks, load_network, merge_networks, module_index
from sdrt.loaders.lycoris import NetworkModule

RANK, ALPHA, TE_ALPHA = 4, 2.0, 3.0

UNET_TARGETS = [
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.0.attentions.0.proj_out",
    "down_blocks.0.resnets.0.conv1",
    "down_blocks.0.downsamplers.0.conv",
    "down_blocks.1.resnets.0.conv_shortcut",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
    "mid_block.resnets.1.conv2",
    "mid_block.resnets.0.time_emb_proj",
    "up_blocks.0.resnets.1.conv1",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0",
    "up_blocks.1.attentions.1.proj_out",
]
# the same modules under their LDM (compvis) names, written out from the LDM UNet layout:
# input_blocks 1 = block 0 (resnet, attention), 2 = its downsampler, 3 = block 1; middle_block
# = resnet, attention, resnet; output_blocks 0-1 = up block 0 (its upsampler at 1.1), 2-3 = up 1
LDM_NAMES = {
    "down_blocks.0.attentions.0.proj_in": "input_blocks.1.1.proj_in",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": "input_blocks.1.1.transformer_blocks.0.attn1.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v": "input_blocks.1.1.transformer_blocks.0.attn2.to_v",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0":
        "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj":
        "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.0.attentions.0.proj_out": "input_blocks.1.1.proj_out",
    "down_blocks.0.resnets.0.conv1": "input_blocks.1.0.in_layers.2",
    "down_blocks.0.downsamplers.0.conv": "input_blocks.2.0.op",
    "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.3.0.skip_connection",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k": "middle_block.1.transformer_blocks.0.attn2.to_k",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.2": "middle_block.1.transformer_blocks.0.ff.net.2",
    "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
    "mid_block.resnets.0.time_emb_proj": "middle_block.0.emb_layers.1",
    "up_blocks.0.resnets.1.conv1": "output_blocks.1.0.in_layers.2",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0":
        "output_blocks.3.1.transformer_blocks.0.attn1.to_out.0",
    "up_blocks.1.attentions.1.proj_out": "output_blocks.3.1.proj_out",
}
TE_TARGETS = [
    "encoder.layers.0.self_attn.q_proj", "encoder.layers.0.self_attn.k_proj", "encoder.layers.0.self_attn.v_proj",
    "encoder.layers.0.self_attn.out_proj", "encoder.layers.1.mlp.fc1", "encoder.layers.1.mlp.fc2",
]


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


def _pair(shape: torch.Size, g: torch.Generator, rank: int = RANK) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (never zero) kohya down/up for a weight: conv down keeps the kernel, up is 1x1."""
    out, inn, kernel = shape[0], shape[1], tuple(shape[2:])
    down = torch.randn(rank, inn, *kernel, generator=g) * 0.3
    up = torch.randn(out, rank, *((1, 1) if kernel else ()), generator=g) * 0.3
    return down, up


def kohya_lora(pipe, *, seed: int = 0, ldm: bool = False, unet_targets=UNET_TARGETS, te_targets=TE_TARGETS
               ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name in unet_targets:
        down, up = _pair(pipe.unet.get_submodule(name).weight.shape, g)
        key = "lora_unet_" + (LDM_NAMES[name] if ldm else name).replace(".", "_")
        sd.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(ALPHA)})
    for name in te_targets:
        down, up = _pair(pipe.text_encoder.get_submodule(name).weight.shape, g)
        key = "lora_te_text_model_" + name.replace(".", "_")
        sd.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                   f"{key}.alpha": torch.tensor(TE_ALPHA)})
    return sd


def write(tmp_path, name: str, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    path = str(tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata=metadata)
    return path


def unet_out(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([700, 30]), encoder_hidden_states=ctx).sample


def te_out(te) -> torch.Tensor:
    ids = torch.randint(0, te.config.vocab_size, (2, 77), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return te(ids).last_hidden_state


def snapshot(*models) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]


def same_weights(models, snap) -> bool:
    return all(torch.equal(m.state_dict()[k], v) for m, s in zip(models, snap) for k, v in s.items())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --- deltas -----------------------------------------------------------------------------------

def test_linear_delta_is_up_at_down_times_alpha_over_rank():
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(6, 40, generator=g), torch.randn(24, 6, generator=g)
    m = NetworkModule("m", "lora", {"lora_down.weight": down, "lora_up.weight": up}, alpha=3.0)
    assert m.rank == 6 and m.scale == 0.5
    torch.testing.assert_close(m.delta(), up @ down * 3.0 / 6, rtol=1e-6, atol=1e-6)
    assert NetworkModule("m", "lora", {"lora_down.weight": down, "lora_up.weight": up}).scale == 1.0


@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_delta_equals_the_two_convolutions_in_sequence(kernel):
    """LoCon's forward is conv(down, k x k) then conv(up, 1x1); one conv with dW must match."""
    g = torch.Generator().manual_seed(kernel)
    down, up = torch.randn(4, 12, kernel, kernel, generator=g), torch.randn(10, 4, 1, 1, generator=g)
    m = NetworkModule("m", "lora", {"lora_down.weight": down, "lora_up.weight": up}, alpha=4.0)
    delta = m.delta()
    assert delta.shape == (10, 12, kernel, kernel)
    x = torch.randn(2, 12, 9, 9, generator=g)
    pad = kernel // 2
    assert rel_err(F.conv2d(x, delta, padding=pad), F.conv2d(F.conv2d(x, down, padding=pad), up)) < 1e-5
    if kernel == 1:
        torch.testing.assert_close(delta[:, :, 0, 0], up[:, :, 0, 0] @ down[:, :, 0, 0], rtol=1e-6, atol=1e-6)


# --- parsing ----------------------------------------------------------------------------------

def test_kohya_file_groups_modules_with_alpha(pipe, tmp_path):
    path = write(tmp_path, "myStyle_v2.safetensors", kohya_lora(pipe), {"ss_network_dim": "4"})
    net = load_network(path)
    assert net.name == "myStyle_v2" and net.source == path and net.metadata["ss_network_dim"] == "4"
    assert len(net.modules) == len(UNET_TARGETS) + len(TE_TARGETS)
    assert net.components == {"unet", "text_encoder"}
    assert {m.kind for m in net.modules.values()} == {"lora"}
    q = net.modules[("unet", "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")]
    assert q.alpha == ALPHA and q.rank == RANK
    assert net.modules[("text_encoder", "text_model_encoder_layers_1_mlp_fc1")].alpha == TE_ALPHA
    assert load_network(path, name="other").name == "other"


class _RunsCode:
    """Unpickling this calls a function: the restricted unpickler must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_pickle_goes_through_weights_only_unpickling(pipe, tmp_path, capsys):
    sd = kohya_lora(pipe, unet_targets=UNET_TARGETS[:2], te_targets=[])
    torch.save(sd, tmp_path / "net.pt")
    net = load_network(tmp_path / "net.pt")
    assert net.name == "net" and len(net.modules) == 2

    torch.save({"x": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt.*(restricted unpickler|weights.only)"):
        load_network(tmp_path / "evil.pt")
    assert "unpickled code ran" not in capsys.readouterr().out


def test_unknown_key_names_the_file_and_key(pipe, tmp_path):
    sd = kohya_lora(pipe, unet_targets=UNET_TARGETS[:1], te_targets=[])
    sd["something_else.weight"] = torch.ones(3)
    path = write(tmp_path, "odd.safetensors", sd)
    with pytest.raises(ValueError, match=r"odd\.safetensors.*'something_else\.weight'"):
        load_network(path)
    net = load_network(path, strict=False)
    assert net.unknown_keys == ["something_else.weight"] and len(net.modules) == 1


def test_dora_and_incomplete_modules_are_refused(pipe, tmp_path):
    sd = kohya_lora(pipe, unet_targets=UNET_TARGETS[1:2], te_targets=[])
    key = "lora_unet_" + UNET_TARGETS[1].replace(".", "_")
    with pytest.raises(ValueError, match=r"dora\.safetensors.*dora_scale.*DoRA"):
        load_network(write(tmp_path, "dora.safetensors", {**sd, f"{key}.dora_scale": torch.ones(1, 64)}))
    del sd[f"{key}.lora_down.weight"]
    with pytest.raises(ValueError, match=r"half\.safetensors.*lora_down\.weight"):
        load_network(write(tmp_path, "half.safetensors", sd))


# --- application ------------------------------------------------------------------------------

def test_runtime_apply_then_remove_is_bit_identical(pipe, tmp_path):
    unet, te = pipe.unet, pipe.text_encoder
    base_snap, base_u, base_t = snapshot(unet, te), unet_out(unet), te_out(te)
    net = load_network(write(tmp_path, "a.safetensors", kohya_lora(pipe)))
    handle = apply_networks(unet, {"text_encoder": te}, [(net, 1.0, 1.0)])
    assert handle.active and len(handle.patched) == len(UNET_TARGETS) + len(TE_TARGETS)
    assert not torch.equal(unet_out(unet), base_u) and not torch.equal(te_out(te), base_t)
    handle.remove()
    assert not handle.active
    assert same_weights([unet, te], base_snap)
    assert torch.equal(unet_out(unet), base_u) and torch.equal(te_out(te), base_t)
    handle.remove()  # idempotent
    assert same_weights([unet, te], base_snap)


def test_applying_twice_does_not_stack(pipe, tmp_path):
    unet, te = pipe.unet, pipe.text_encoder
    base = snapshot(unet, te)
    net = load_network(write(tmp_path, "a.safetensors", kohya_lora(pipe)))
    first = apply_networks(unet, {"text_encoder": te}, [(net, 1.0, 1.0)])
    once = snapshot(unet, te)
    second = apply_networks(unet, {"text_encoder": te}, [(net, 1.0, 1.0)])
    assert not first.active and second.active
    assert same_weights([unet, te], once)
    first.remove()  # superseded: must not touch the second application
    assert same_weights([unet, te], once)
    with second:
        pass
    assert same_weights([unet, te], base)


def test_separate_text_encoder_and_unet_weights_for_several_networks(pipe, tmp_path):
    unet, te = pipe.unet, pipe.text_encoder
    sd_a, sd_b = kohya_lora(pipe, seed=1), kohya_lora(pipe, seed=2)
    a, b = load_network(write(tmp_path, "a.safetensors", sd_a)), load_network(write(tmp_path, "b.safetensors", sd_b))
    base = snapshot(unet, te)
    with apply_networks(unet, {"text_encoder": te}, [(a, 0.5, 1.0), (b, 0.0, -0.7)]):
        for name in UNET_TARGETS[:3] + ["mid_block.resnets.1.conv2"]:
            key = "lora_unet_" + name.replace(".", "_")
            w0 = base[0][name + ".weight"]
            want = w0.clone()
            for sd, mult in ((sd_a, 1.0), (sd_b, -0.7)):
                down, up = sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"]
                d = (up.flatten(1) @ down.flatten(1)).reshape(w0.shape)
                want += mult * d * ALPHA / RANK
            torch.testing.assert_close(unet.get_submodule(name).weight, want, rtol=1e-5, atol=1e-6)
        q = "encoder.layers.0.self_attn.q_proj"
        key = "lora_te_text_model_" + q.replace(".", "_")
        up, down = sd_a[key + ".lora_up.weight"], sd_a[key + ".lora_down.weight"]
        want = base[1][q + ".weight"] + 0.5 * up @ down * TE_ALPHA / RANK
        torch.testing.assert_close(te.get_submodule(q).weight, want, rtol=1e-5, atol=1e-6)
    assert same_weights([unet, te], base)


def test_merged_equals_runtime(pipe, tmp_path):
    net = load_network(write(tmp_path, "a.safetensors", kohya_lora(pipe)))
    unet, te = pipe.unet, pipe.text_encoder
    with apply_networks(unet, {"text_encoder": te}, [(net, 0.8, 1.3)]):
        run_u, run_t = unet_out(unet), te_out(te)
    merged_u, merged_t = copy.deepcopy(unet), copy.deepcopy(te)
    merge_networks(merged_u, {"text_encoder": merged_t}, [(net, 0.8, 1.3)])
    assert rel_err(unet_out(merged_u), run_u) <= 1e-5
    assert rel_err(te_out(merged_t), run_t) <= 1e-5


def test_merge_is_refused_while_runtime_networks_are_applied(pipe, tmp_path):
    net = load_network(write(tmp_path, "a.safetensors", kohya_lora(pipe)))
    with apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder}, [(net, 1.0, 1.0)]):
        with pytest.raises(RuntimeError, match="remove"):
            merge_networks(pipe.unet, {}, [(net, 1.0, 1.0)])


# --- names ------------------------------------------------------------------------------------

def test_ldm_names_patch_the_same_weights_as_diffusers_names(pipe, tmp_path):
    unet, te = pipe.unet, pipe.text_encoder
    diffusers_style = load_network(write(tmp_path, "d.safetensors", kohya_lora(pipe, seed=3)))
    ldm_style = load_network(write(tmp_path, "l.safetensors", kohya_lora(pipe, seed=3, ldm=True)))
    with apply_networks(unet, {"text_encoder": te}, [(diffusers_style, 1.0, 1.0)]):
        want = snapshot(unet, te)
    with apply_networks(unet, {"text_encoder": te}, [(ldm_style, 1.0, 1.0)]) as handle:
        assert len(handle.patched) == len(UNET_TARGETS) + len(TE_TARGETS)
        assert same_weights([unet, te], want)


def _small_unet(**config):
    from diffusers import UNet2DConditionModel

    base = dict(sample_size=8, in_channels=4, out_channels=4, norm_num_groups=8, cross_attention_dim=16,
                attention_head_dim=2)
    return UNet2DConditionModel(**{**base, **config})


def test_ldm_names_on_sd1_and_sdxl_block_layouts():
    """Module names from the real LDM UNets: SD1 (4 blocks, 2 layers, attention in the first
    three) and SDXL (no attention in the first block, upsampler after 3 resnets + attention)."""
    sd1 = _small_unet(block_out_channels=(8, 8, 16, 16), layers_per_block=2,
                      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    index = {k: v[0] for k, v in module_index(sd1, "unet").items()}
    assert index["input_blocks_4_1_transformer_blocks_0_attn1_to_q"] == (
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    assert index["input_blocks_9_0_op"] == "down_blocks.2.downsamplers.0.conv"
    assert index["input_blocks_11_0_out_layers_3"] == "down_blocks.3.resnets.1.conv2"
    assert index["middle_block_2_emb_layers_1"] == "mid_block.resnets.1.time_emb_proj"
    assert index["output_blocks_2_1_conv"] == "up_blocks.0.upsamplers.0.conv"
    assert index["output_blocks_5_2_conv"] == "up_blocks.1.upsamplers.0.conv"
    assert index["output_blocks_11_1_proj_out"] == "up_blocks.3.attentions.2.proj_out"
    assert index["output_blocks_6_0_skip_connection"] == "up_blocks.2.resnets.0.conv_shortcut"
    assert index["out_2"] == "conv_out" and index["time_embed_0"] == "time_embedding.linear_1"

    sdxl = _small_unet(block_out_channels=(8, 16, 16), layers_per_block=2, transformer_layers_per_block=(1, 2, 2),
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                       addition_embed_type="text_time", addition_time_embed_dim=4,
                       projection_class_embeddings_input_dim=16 + 6 * 4, use_linear_projection=True)
    index = {k: v[0] for k, v in module_index(sdxl, "unet").items()}
    assert index["input_blocks_4_1_transformer_blocks_1_attn2_to_k"] == (
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k")
    assert index["input_blocks_6_0_op"] == "down_blocks.1.downsamplers.0.conv"
    assert index["input_blocks_8_1_proj_in"] == "down_blocks.2.attentions.1.proj_in"
    assert index["middle_block_1_transformer_blocks_1_ff_net_2"] == (
        "mid_block.attentions.0.transformer_blocks.1.ff.net.2")
    assert index["output_blocks_2_2_conv"] == "up_blocks.0.upsamplers.0.conv"
    assert index["output_blocks_5_2_conv"] == "up_blocks.1.upsamplers.0.conv"
    assert index["output_blocks_8_0_in_layers_2"] == "up_blocks.2.resnets.2.conv1"
    assert index["label_emb_0_0"] == "add_embedding.linear_1" and index["label_emb_0_2"] == "add_embedding.linear_2"


def test_peft_and_old_diffusers_formats_equal_kohya(pipe, tmp_path):
    """peft keys (lora_A/lora_B, alpha from diffusers' lora_adapter_metadata) and diffusers'
    own conversion of the kohya file (processor names) patch the same weights as the kohya file."""
    import json

    from diffusers import StableDiffusionPipeline

    unet, te = pipe.unet, pipe.text_encoder
    sd = kohya_lora(pipe, seed=4)
    kohya_path = write(tmp_path, "k.safetensors", sd)
    with apply_networks(unet, {"text_encoder": te}, [(load_network(kohya_path), 1.0, 1.0)]):
        want = snapshot(unet, te)

    peft: dict[str, torch.Tensor] = {}
    for prefix, kohya_prefix, targets in (("unet.", "lora_unet_", UNET_TARGETS),
                                          ("text_encoder.", "lora_te_text_model_", TE_TARGETS)):
        for name in targets:
            key = kohya_prefix + name.replace(".", "_")
            peft[f"{prefix}{name}.lora_A.weight"] = sd[f"{key}.lora_down.weight"]
            peft[f"{prefix}{name}.lora_B.weight"] = sd[f"{key}.lora_up.weight"]
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": RANK, "unet.lora_alpha": ALPHA,
                                                 "text_encoder.r": RANK, "text_encoder.lora_alpha": TE_ALPHA})}
    peft_net = load_network(write(tmp_path, "p.safetensors", peft, meta))
    assert {m.alpha for m in peft_net.modules.values()} == {ALPHA, TE_ALPHA}
    with apply_networks(unet, {"text_encoder": te}, [(peft_net, 1.0, 1.0)]):
        assert same_weights([unet, te], want)

    # diffusers' conversion keeps alphas apart (network_alphas), so use alpha = rank (scale 1)
    unit = {k: torch.tensor(float(RANK)) if k.endswith(".alpha") else v for k, v in sd.items()}
    unit_path = write(tmp_path, "unit.safetensors", unit)
    with apply_networks(unet, {"text_encoder": te}, [(load_network(unit_path), 1.0, 1.0)]):
        want_unit = snapshot(unet, te)
    converted, _ = StableDiffusionPipeline.lora_state_dict(unit_path)
    assert any(".processor.to_q_lora.down.weight" in k for k in converted)
    assert any(".lora_linear_layer.down.weight" in k for k in converted)
    net = load_network(converted)
    assert len(net.modules) == len(UNET_TARGETS) + len(TE_TARGETS)
    with apply_networks(unet, {"text_encoder": te}, [(net, 1.0, 1.0)]):
        assert same_weights([unet, te], want_unit)


def test_peft_metadata_alpha_pattern_and_rslora(pipe, tmp_path):
    import json

    g = torch.Generator().manual_seed(6)
    sd = {}
    for name in UNET_TARGETS[1:4]:
        down, up = _pair(pipe.unet.get_submodule(name).weight.shape, g)
        sd.update({f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up})
    config = {"unet.r": RANK, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn1.to_k": 2}}
    net = load_network(write(tmp_path, "m.safetensors", sd, {"lora_adapter_metadata": json.dumps(config)}))
    alphas = {name: m.alpha for (_, name), m in net.modules.items()}
    assert alphas == {"down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 8.0,
                      "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k": 2.0,
                      "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v": 8.0}
    config["unet.use_rslora"] = True  # peft scales by alpha / sqrt(r)
    net = load_network(write(tmp_path, "rs.safetensors", sd, {"lora_adapter_metadata": json.dumps(config)}))
    assert {m.scale for m in net.modules.values()} == {8 / RANK ** 0.5, 2 / RANK ** 0.5}
    assert load_network(write(tmp_path, "none.safetensors", sd)).modules[
        ("unet", "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")].scale == 1.0


# --- parity with diffusers ----------------------------------------------------------------------

def _diffusers_reference(path: str, unet, te) -> None:
    """Patch copies the way diffusers + peft would: diffusers' kohya conversion, its peft key
    conversion and LoraConfig kwargs (lora_alpha / r), then peft's delta (B @ A, or for convs
    conv2d(A^T, B)^T) times lora_alpha / r."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.peft_utils import get_peft_kwargs
    from diffusers.utils.state_dict_utils import (convert_state_dict_to_diffusers, convert_state_dict_to_peft,
                                                  convert_unet_state_dict_to_peft)

    converted, alphas = StableDiffusionPipeline.lora_state_dict(path, unet_config=unet.config)
    parts = {
        "unet": convert_unet_state_dict_to_peft(
            {k.removeprefix("unet."): v for k, v in converted.items() if k.startswith("unet.")}),
        "text_encoder": {k.removeprefix("text_model."): v for k, v in convert_state_dict_to_peft(
            convert_state_dict_to_diffusers({k.removeprefix("text_encoder."): v for k, v in converted.items()
                                             if k.startswith("text_encoder.")})).items()},
    }
    for component, model in (("unet", unet), ("text_encoder", te)):
        sd = parts[component]
        ranks = {k: v.shape[1] for k, v in sd.items() if "lora_B" in k}
        comp_alphas = {k.removeprefix(component + "."): v for k, v in alphas.items() if k.startswith(component + ".")}
        kwargs = get_peft_kwargs(ranks, comp_alphas, sd, is_unet=component == "unet")
        assert not kwargs["alpha_pattern"] and not kwargs["rank_pattern"]  # one alpha/rank per component here
        scaling = kwargs["lora_alpha"] / kwargs["r"]
        with torch.no_grad():
            for key, a in sd.items():
                if not key.endswith(".lora_A.weight"):
                    continue
                b = sd[key.replace("lora_A", "lora_B")]
                weight = model.get_submodule(key.removesuffix(".lora_A.weight")).weight
                if weight.dim() == 4:
                    delta = F.conv2d(a.permute(1, 0, 2, 3), b).permute(1, 0, 2, 3)
                else:
                    delta = b @ a
                weight += delta * scaling


@pytest.mark.parametrize("ldm", [False, True], ids=["diffusers-names", "ldm-names"])
def test_parity_with_diffusers_conversion(pipe, tmp_path, ldm):
    # diffusers' sgm block remap treats output_blocks n.1 as an attention, so an upsampler of an
    # up block without attention (the toy's up_blocks.0) is left out of the LDM-named case
    targets = [n for n in UNET_TARGETS if not (ldm and "upsamplers" in n)]
    path = write(tmp_path, "parity.safetensors", kohya_lora(pipe, seed=7, ldm=ldm, unet_targets=targets))
    ref_u, ref_t = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
    _diffusers_reference(path, ref_u, ref_t)
    with apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder}, [(load_network(path), 1.0, 1.0)]):
        assert rel_err(unet_out(pipe.unet), unet_out(ref_u)) < 1e-5
        assert rel_err(te_out(pipe.text_encoder), te_out(ref_t)) < 1e-5


def test_parity_with_diffusers_peft_loader(pipe, tmp_path):
    # peft is a test dependency (pyproject [test]); only the GPU machine's image may lack it
    if os.environ.get("CI"):
        import peft  # noqa: F401
    else:
        pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline

    from sdrt.loading import toy_model_path
    from sdrt.prompt import get_tokenizer

    ref = StableDiffusionPipeline.from_pretrained(
        toy_model_path(), tokenizer=get_tokenizer(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, local_files_only=True, torch_dtype=torch.float32)
    path = write(tmp_path, "parity.safetensors", kohya_lora(pipe, seed=8))
    ref.load_lora_weights(path)
    ref.fuse_lora()
    with apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder}, [(load_network(path), 1.0, 1.0)]):
        assert rel_err(unet_out(pipe.unet), unet_out(ref.unet)) < 1e-5
        assert rel_err(te_out(pipe.text_encoder), te_out(ref.text_encoder)) < 1e-5


# --- refusals ---------------------------------------------------------------------------------

def _assert_refused(pipe, path: str, key_pattern: str) -> None:
    unet, te = pipe.unet, pipe.text_encoder
    base = snapshot(unet, te)
    with pytest.raises(ValueError, match=key_pattern) as e:
        apply_networks(unet, {"text_encoder": te}, [(load_network(path), 1.0, 1.0)])
    assert path in str(e.value)
    assert same_weights([unet, te], base)
    with pytest.raises(ValueError, match=key_pattern):
        merge_networks(unet, {"text_encoder": te}, [(load_network(path), 1.0, 1.0)])
    assert same_weights([unet, te], base)


def test_missing_module_is_refused_and_model_unchanged(pipe, tmp_path):
    sd = kohya_lora(pipe)
    bad = "lora_unet_down_blocks_3_attentions_1_transformer_blocks_0_attn1_to_q"  # SD1 block the toy lacks
    sd.update({f"{bad}.lora_down.weight": torch.randn(4, 320), f"{bad}.lora_up.weight": torch.randn(320, 4)})
    _assert_refused(pipe, write(tmp_path, "sd15_style.safetensors", sd), bad)


def test_wrong_shape_is_refused_and_model_unchanged(pipe, tmp_path):
    sd = kohya_lora(pipe)
    key = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"  # weight (128, 64)
    sd[f"{key}.lora_down.weight"] = torch.randn(RANK, 768)  # an SD1 cross-attention width
    _assert_refused(pipe, write(tmp_path, "wrong_shape.safetensors", sd), key + r".*\(128, 768\).*\(128, 64\)")


def test_sdxl_text_encoder_keys_are_refused_without_a_second_encoder(pipe, tmp_path):
    sd = {k.replace("lora_te_", "lora_te1_"): v for k, v in kohya_lora(pipe).items()}
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    sd.update({f"{te2}.lora_down.weight": torch.randn(4, 1280), f"{te2}.lora_up.weight": torch.randn(1280, 4)})
    _assert_refused(pipe, write(tmp_path, "sdxl.safetensors", sd), te2 + ".*text_encoder_2")


def test_a_refused_network_leaves_the_previous_application_in_place(pipe, tmp_path):
    good = load_network(write(tmp_path, "good.safetensors", kohya_lora(pipe)))
    sd = kohya_lora(pipe)
    sd["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"] = torch.randn(RANK, 7)
    bad = load_network(write(tmp_path, "bad.safetensors", sd))
    base = snapshot(pipe.unet, pipe.text_encoder)
    with apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder}, [(good, 1.0, 1.0)]) as handle:
        applied = snapshot(pipe.unet, pipe.text_encoder)
        with pytest.raises(ValueError, match="bad.safetensors"):
            apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder}, [(good, 1.0, 1.0), (bad, 1.0, 1.0)])
        assert handle.active and same_weights([pipe.unet, pipe.text_encoder], applied)
    assert same_weights([pipe.unet, pipe.text_encoder], base)


# --- end to end -------------------------------------------------------------------------------

def test_txt2img_with_a_lora_then_removed_is_the_base_image_again(pipe, tmp_path):
    def image() -> np.ndarray:
        return np.asarray(pipe.txt2img("a red circle", seed=1, steps=6).images[0])

    base = image()
    net = load_network(write(tmp_path, "e2e.safetensors", kohya_lora(pipe, seed=9)))
    handle = apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder}, [(net, 1.0, 1.0)])
    with_lora = image()
    handle.remove()
    assert not np.array_equal(with_lora, base)
    assert image().tobytes() == base.tobytes()
