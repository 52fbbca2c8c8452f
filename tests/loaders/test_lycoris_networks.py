"""LyCORIS module types: LoCon with a CP core, LoHa (FedPara) and LoKr, on random tensors and on
the toy UNet / text encoder.

Oracles are written differently from the implementation: per-kernel-position loops of small
matrix products and ``torch.kron`` on 2-D slices, and for LoCon-CP the three convolutions run in
sequence. Tolerances: 1e-5 relative to the largest magnitude (float32 sums in another order).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import sdrt
from sdrt.loaders.lora import apply_networks, load_network, merge_networks
from sdrt.loaders.lycoris import NetworkModule, detect_kind


def rnd(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * 0.3


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def cp_by_positions(core: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """dW[:, :, h, w] = wa^T @ core[:, :, h, w] @ wb (wa: rank x out, wb: rank x in)."""
    out = torch.empty(wa.shape[1], wb.shape[1], *core.shape[2:])
    for h in range(core.shape[2]):
        for w in range(core.shape[3]):
            out[:, :, h, w] = wa.T @ core[:, :, h, w] @ wb
    return out


# --- deltas on random tensors -----------------------------------------------------------------

def test_locon_cp_core_equals_three_convolutions():
    g = torch.Generator().manual_seed(0)
    down, mid, up = rnd(g, 4, 12, 1, 1), rnd(g, 4, 4, 3, 3), rnd(g, 10, 4, 1, 1)
    m = NetworkModule("m", "lora", {"lora_down.weight": down, "lora_mid.weight": mid, "lora_up.weight": up},
                      alpha=2.0)
    assert m.shape() == (10, 12, 3, 3) and m.scale == 0.5
    x = torch.randn(2, 12, 9, 9, generator=g)
    chained = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    assert rel_err(F.conv2d(x, m.delta(), padding=1), 0.5 * chained) < 1e-5


def test_loha_linear_is_the_hadamard_product_of_two_low_rank_matrices():
    g = torch.Generator().manual_seed(1)
    w1a, w1b, w2a, w2b = rnd(g, 24, 6), rnd(g, 6, 40), rnd(g, 24, 6), rnd(g, 6, 40)
    m = NetworkModule("m", "loha", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b},
                      alpha=3.0)
    assert m.rank == 6
    assert rel_err(m.delta(), (w1a @ w1b) * (w2a @ w2b) * 3.0 / 6) < 1e-6


def test_loha_conv_flat_and_tucker():
    g = torch.Generator().manual_seed(2)
    # conventional: w1b flattens (in, k, k); the delta is reshaped to the kernel by the caller
    w1a, w1b, w2a, w2b = rnd(g, 10, 4), rnd(g, 4, 12 * 9), rnd(g, 10, 4), rnd(g, 4, 12 * 9)
    flat = NetworkModule("m", "loha", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b})
    assert rel_err(flat.delta(), (w1a @ w1b) * (w2a @ w2b)) < 1e-6
    # Tucker: w_a is (rank, out), w_b (rank, in), t (rank, rank, k, k)
    t1, t2 = rnd(g, 4, 4, 3, 3), rnd(g, 4, 4, 3, 3)
    w1a, w1b, w2a, w2b = rnd(g, 4, 10), rnd(g, 4, 12), rnd(g, 4, 10), rnd(g, 4, 12)
    tucker = NetworkModule("m", "loha", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                                         "hada_t1": t1, "hada_t2": t2}, alpha=2.0)
    want = cp_by_positions(t1, w1a, w1b) * cp_by_positions(t2, w2a, w2b) * 2.0 / 4
    assert tucker.shape() == (10, 12, 3, 3)
    assert rel_err(tucker.delta(), want) < 1e-5


def test_lokr_is_a_kronecker_product():
    g = torch.Generator().manual_seed(3)
    w1, w2a, w2b = rnd(g, 4, 8), rnd(g, 6, 2), rnd(g, 2, 5)
    m = NetworkModule("m", "lokr", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b}, alpha=1.0)
    assert m.rank == 2 and m.shape() == (24, 40)
    assert rel_err(m.delta(), torch.kron(w1, w2a @ w2b) * 0.5) < 1e-6
    # both factors full: no rank, so alpha does not scale (A1111, LyCORIS)
    w2 = rnd(g, 6, 5)
    full = NetworkModule("m", "lokr", {"lokr_w1": w1, "lokr_w2": w2}, alpha=7.0)
    assert full.rank is None and full.scale == 1.0
    assert torch.equal(full.delta(), torch.kron(w1, w2))
    # w1 low-rank: the rank comes from lokr_w1_b
    w1a, w1b = rnd(g, 4, 3), rnd(g, 3, 8)
    low = NetworkModule("m", "lokr", {"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2}, alpha=6.0)
    assert low.rank == 3 and rel_err(low.delta(), torch.kron(w1a @ w1b, w2) * 2.0) < 1e-6


def test_lokr_scale_uses_w2_b_rank_when_both_factors_are_low_rank():
    """A1111 network_lokr: dim is set from lokr_w1_b, then overwritten by lokr_w2_b."""
    g = torch.Generator().manual_seed(3)
    tensors = {"lokr_w1_a": rnd(g, 4, 2), "lokr_w1_b": rnd(g, 2, 4), "lokr_w2_a": rnd(g, 5, 3), "lokr_w2_b": rnd(g, 3, 6)}
    m = NetworkModule("m", "lokr", tensors, alpha=6.0)
    assert m.rank == 3 and m.scale == pytest.approx(2.0)
    want = torch.kron(tensors["lokr_w1_a"] @ tensors["lokr_w1_b"], tensors["lokr_w2_a"] @ tensors["lokr_w2_b"]) * 2.0
    assert rel_err(m.delta(), want) < 1e-6


def test_lokr_conv_kernel_lives_in_w2():
    g = torch.Generator().manual_seed(4)
    w1, w2 = rnd(g, 2, 3), rnd(g, 5, 4, 3, 3)
    m = NetworkModule("m", "lokr", {"lokr_w1": w1, "lokr_w2": w2})
    want = torch.stack([torch.stack([torch.kron(w1, w2[:, :, h, w]) for w in range(3)], -1) for h in range(3)], -2)
    assert m.shape() == (10, 12, 3, 3) and rel_err(m.delta(), want) < 1e-6
    t2, w2a, w2b = rnd(g, 2, 2, 3, 3), rnd(g, 2, 5), rnd(g, 2, 4)
    cp = NetworkModule("m", "lokr", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "lokr_t2": t2}, alpha=1.0)
    w2_cp = cp_by_positions(t2, w2a, w2b)
    want = torch.stack([torch.stack([torch.kron(w1, w2_cp[:, :, h, w]) for w in range(3)], -1) for h in range(3)], -2)
    assert rel_err(cp.delta(), want * 0.5) < 1e-5


def test_mixed_or_unknown_types_are_refused():
    with pytest.raises(ValueError, match="cannot tell"):
        detect_kind({"lora_up.weight", "hada_w1_a"})
    bad = NetworkModule("lora_unet_x", "loha", {"hada_w1_a": torch.ones(4, 2), "hada_w1_b": torch.ones(2, 3),
                                                "hada_w2_a": torch.ones(4, 2), "hada_w2_b": torch.ones(2, 5)})
    with pytest.raises(ValueError, match="lora_unet_x"):
        bad.shape()


# --- on the toy model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


def lycoris_file(pipe, seed: int = 0) -> dict[str, torch.Tensor]:
    """LoHa and LoKr (and LoCon-CP) modules on real toy names, kohya style, linear and conv."""
    g = torch.Generator().manual_seed(seed)
    u = "lora_unet_"
    sd = {
        # LoHa on a linear (64x64) and a 3x3 conv (64x64x3x3, Tucker)
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a": rnd(g, 64, 4),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_b": rnd(g, 4, 64),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_a": rnd(g, 64, 4),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_b": rnd(g, 4, 64),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(2.0),
        f"{u}down_blocks_0_resnets_0_conv1.hada_w1_a": rnd(g, 4, 64),
        f"{u}down_blocks_0_resnets_0_conv1.hada_w1_b": rnd(g, 4, 64),
        f"{u}down_blocks_0_resnets_0_conv1.hada_t1": rnd(g, 4, 4, 3, 3),
        f"{u}down_blocks_0_resnets_0_conv1.hada_w2_a": rnd(g, 4, 64),
        f"{u}down_blocks_0_resnets_0_conv1.hada_w2_b": rnd(g, 4, 64),
        f"{u}down_blocks_0_resnets_0_conv1.hada_t2": rnd(g, 4, 4, 3, 3),
        # LoHa, flat, on a 3x3 conv (128 x 128*9)
        f"{u}mid_block_resnets_1_conv2.hada_w1_a": rnd(g, 128, 2),
        f"{u}mid_block_resnets_1_conv2.hada_w1_b": rnd(g, 2, 128 * 9),
        f"{u}mid_block_resnets_1_conv2.hada_w2_a": rnd(g, 128, 2),
        f"{u}mid_block_resnets_1_conv2.hada_w2_b": rnd(g, 2, 128 * 9),
        # LoKr on a linear (512x64), a 1x1 conv (128x64x1x1) and a 3x3 conv with a CP core
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj.lokr_w1": rnd(g, 8, 4),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj.lokr_w2_a": rnd(g, 64, 2),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj.lokr_w2_b": rnd(g, 2, 16),
        f"{u}down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj.alpha": torch.tensor(1.0),
        f"{u}down_blocks_1_resnets_0_conv_shortcut.lokr_w1_a": rnd(g, 8, 2),
        f"{u}down_blocks_1_resnets_0_conv_shortcut.lokr_w1_b": rnd(g, 2, 8),
        f"{u}down_blocks_1_resnets_0_conv_shortcut.lokr_w2": rnd(g, 16, 8, 1, 1),
        f"{u}up_blocks_0_upsamplers_0_conv.lokr_w1": rnd(g, 4, 4),
        f"{u}up_blocks_0_upsamplers_0_conv.lokr_w2_a": rnd(g, 2, 32),
        f"{u}up_blocks_0_upsamplers_0_conv.lokr_w2_b": rnd(g, 2, 32),
        f"{u}up_blocks_0_upsamplers_0_conv.lokr_t2": rnd(g, 2, 2, 3, 3),
        # LoCon with a CP core on a 3x3 conv
        f"{u}up_blocks_1_resnets_1_conv1.lora_down.weight": rnd(g, 4, 128, 1, 1),
        f"{u}up_blocks_1_resnets_1_conv1.lora_mid.weight": rnd(g, 4, 4, 3, 3),
        f"{u}up_blocks_1_resnets_1_conv1.lora_up.weight": rnd(g, 64, 4, 1, 1),
        # LoKr on the text encoder
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w1": rnd(g, 16, 8),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w2": rnd(g, 16, 8),
    }
    return sd


def write(tmp_path, name: str, sd: dict[str, torch.Tensor]) -> str:
    path = str(tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path


def unet_out(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(99)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([900, 10]), encoder_hidden_states=ctx).sample


def state(*models) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in models]


def same(models, snap) -> bool:
    return all(torch.equal(m.state_dict()[k], v) for m, s in zip(models, snap) for k, v in s.items())


def test_lycoris_file_kinds(pipe, tmp_path):
    net = load_network(write(tmp_path, "lyco.safetensors", lycoris_file(pipe)))
    kinds = {name: m.kind for (_, name), m in net.modules.items()}
    assert kinds["down_blocks_0_resnets_0_conv1"] == "loha"
    assert kinds["up_blocks_0_upsamplers_0_conv"] == "lokr"
    assert kinds["up_blocks_1_resnets_1_conv1"] == "lora"
    assert kinds["text_model_encoder_layers_0_mlp_fc1"] == "lokr"


def test_lycoris_apply_remove_merge_on_the_toy(pipe, tmp_path):
    unet, te = pipe.unet, pipe.text_encoder
    sd = lycoris_file(pipe)
    net = load_network(write(tmp_path, "lyco.safetensors", sd))
    base, base_out = state(unet, te), unet_out(unet)
    with apply_networks(unet, {"text_encoder": te}, [(net, 1.0, 0.9)]) as handle:
        assert len(handle.patched) == len(net.modules)
        run_out = unet_out(unet)
        assert not torch.equal(run_out, base_out)
        # the flat LoHa delta lands reshaped on the 3x3 kernel
        k = "lora_unet_mid_block_resnets_1_conv2."
        flat = (sd[k + "hada_w1_a"] @ sd[k + "hada_w1_b"]) * (sd[k + "hada_w2_a"] @ sd[k + "hada_w2_b"])
        got = unet.mid_block.resnets[1].conv2.weight - base[0]["mid_block.resnets.1.conv2.weight"]
        assert rel_err(got, 0.9 * flat.reshape(128, 128, 3, 3)) < 1e-5
        w = te.encoder.layers[0].mlp.fc1.weight - base[1]["encoder.layers.0.mlp.fc1.weight"]
        t = "lora_te_text_model_encoder_layers_0_mlp_fc1."
        assert rel_err(w, torch.kron(sd[t + "lokr_w1"], sd[t + "lokr_w2"])) < 1e-5
    assert same([unet, te], base) and torch.equal(unet_out(unet), base_out)
    merged = copy.deepcopy(unet)
    merge_networks(merged, {"text_encoder": copy.deepcopy(te)}, [(net, 1.0, 0.9)])
    assert rel_err(unet_out(merged), run_out) <= 1e-5


def test_lycoris_wrong_shape_is_refused(pipe, tmp_path):
    sd = lycoris_file(pipe)
    k = "lora_unet_up_blocks_0_upsamplers_0_conv"
    sd[f"{k}.lokr_w1"] = torch.randn(4, 2)  # kron gives (128, 64, 3, 3) on a (128, 128, 3, 3) kernel
    base = state(pipe.unet, pipe.text_encoder)
    with pytest.raises(ValueError, match=rf"shape_lyco\.safetensors.*{k}.*\(128, 64, 3, 3\)"):
        apply_networks(pipe.unet, {"text_encoder": pipe.text_encoder},
                       [(load_network(write(tmp_path, "shape_lyco.safetensors", sd)), 1.0, 1.0)])
    assert same([pipe.unet, pipe.text_encoder], base)
