"""SDXL on ONNX Runtime: a tiny random SDXL and refiner (tests/sdxl/tiny_sdxl.py) exported with
sdrt.export.to_onnx and run by the onnxruntime backend, against the torch backend on the same
weights (itself checked against diffusers in tests/sdxl): the export folder, conditioning (context,
pooled) to 1e-4, txt2img within 1 uint8 level in fp32, the fp16 export, textual inversion through
both token tables, the refiner's UNet with 5 time ids and the hand-off on ORT, the extras the
exported UNet takes, the TensorRT profiles of an SDXL export and Core ML conversion of its specs."""
import os
import sys

import numpy as np
import pytest
import torch

if os.environ.get("CI"):  # CI installs the onnx extra; a missing onnxruntime must fail there, not skip
    import onnx
    import onnxruntime  # noqa: F401
else:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

import sdrt
from sdrt.export import tensorrt_export as trt_export
from sdrt.export.onnx_export import to_onnx
from sdrt.export.specs import PROFILES, SDXL_COMPONENTS
from sdrt.pipelines import GenerationParams
from sdrt.pipelines.hooks import JobHooks

SDXL_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sdxl")
if SDXL_TESTS not in sys.path:
    sys.path.insert(0, SDXL_TESTS)
from tiny_sdxl import build_pipeline  # noqa: E402  (tests/sdxl is not a package)

EULER_KARRAS = dict(steps=8, sampler_name="Euler", scheduler="Karras")


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def saved(tmp_path_factory, name: str, refiner: bool) -> str:
    folder = tmp_path_factory.mktemp(name) / name
    build_pipeline(1 if refiner else 0, refiner=refiner).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return saved(tmp_path_factory, "tiny-sdxl", refiner=False)


@pytest.fixture(scope="module")
def torch_pipe(folder):
    return sdrt.load(folder)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, torch_pipe):
    out = tmp_path_factory.mktemp("tiny-sdxl-onnx")
    return str(out), to_onnx(torch_pipe, str(out))


@pytest.fixture(scope="module")
def ort_pipe(exported):
    return sdrt.load(exported[0], backend="onnxruntime")


@pytest.fixture(scope="module")
def refiner(tmp_path_factory):
    """(diffusers folder, torch pipeline, ONNX export folder) of the tiny refiner."""
    folder = saved(tmp_path_factory, "tiny-refiner", refiner=True)
    pipe = sdrt.load(folder)
    out = tmp_path_factory.mktemp("tiny-refiner-onnx")
    to_onnx(pipe, str(out))
    return folder, pipe, str(out)


def conditioning(pipe, prompt: str, negative: str):
    job = pipe.prepare(GenerationParams(prompt=prompt, negative_prompt=negative).sized(64), JobHooks())
    return pipe.condition(job)[0]


def test_sdxl_export_folder_declares_the_sdxl_specs(exported, torch_pipe, ort_pipe):
    out, manifest = exported
    assert list(manifest["components"]) == list(SDXL_COMPONENTS)
    c = manifest["components"]
    assert c["unet"]["inputs"] == ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    assert c["text_encoder"]["outputs"] == ["hidden_states"]
    assert c["text_encoder_2"]["inputs"] == ["inputs_embeds", "eos_index"]
    assert c["text_encoder_2"]["outputs"] == ["hidden_states", "text_embeds"]
    assert all(e["parity_max_abs_error"] < 1e-4 for e in c.values())  # measured <= 7e-6
    for name in ("text_encoder", "text_encoder_2"):  # the lookups run outside: textual inversion
        table = np.load(os.path.join(out, name, "token_embedding.npy"))
        want = getattr(torch_pipe, name).get_input_embeddings().weight.detach().numpy()
        assert np.array_equal(table, want)
    assert "text_layers" not in manifest  # no clip skip rows: SDXL's text encoders give one layer
    assert manifest["widths"] == {"context_width": 64, "text_width": 32, "text_width_2": 32, "pooled_width": 24}
    assert manifest["profile"] == PROFILES["sdxl"] and torch_pipe.info.family == "sdxl"
    assert ort_pipe.info.family == "sdxl" and ort_pipe.info.added_time_ids == 6
    assert ort_pipe.info.default_size == torch_pipe.info.default_size == 64


@pytest.mark.parametrize("prompt,negative", [("a red cat in a hat", ""),
                                             ("a (blue:1.2) dog, photo BREAK [fog] at night", "blurry, ugly"),
                                             (" ".join(["tall green tree"] * 30), "cat")])  # 2 chunks
def test_conditioning_on_onnxruntime_matches_torch(torch_pipe, ort_pipe, prompt, negative):
    want, got = conditioning(torch_pipe, prompt, negative), conditioning(ort_pipe, prompt, negative)
    for w, g in ((want.conds[0], got.conds[0]), (want.uncond, got.uncond)):
        assert g.at(0).shape == w.at(0).shape and g.pooled_at(0).shape == (24,)
        torch.testing.assert_close(g.at(0), w.at(0), rtol=0, atol=1e-4)
        torch.testing.assert_close(g.pooled_at(0), w.pooled_at(0), rtol=0, atol=1e-4)
    if not negative:  # the zeroed empty negative happens above the backend, on ORT too
        assert torch.count_nonzero(got.uncond.at(0)) == 0


@pytest.mark.parametrize("prompt,negative,cfg", [("a red cat in a hat", "", 7.0), ("a (blue:1.1) dog", "fog", 4.0)])
def test_txt2img_on_onnxruntime_matches_torch(torch_pipe, ort_pipe, prompt, negative, cfg):
    kw = dict(EULER_KARRAS, seed=11, cfg_scale=cfg)
    want, got = torch_pipe.txt2img(prompt, negative, **kw), ort_pipe.txt2img(prompt, negative, **kw)
    assert np.abs(pixels(got) - pixels(want)).max() <= 1  # measured 0
    assert got.infotexts[0].split("Version")[0] == want.infotexts[0].split("Version")[0]


def test_fp16_export_runs_within_a_stated_tolerance(tmp_path, torch_pipe):
    """fp16 graphs (I/O kept fp32) through ORT's float16 converter, on every component: measured
    max 1 uint8 level and 60 dB against torch fp32; asserted at 4 levels and 40 dB."""
    manifest = to_onnx(torch_pipe, str(tmp_path), fp16=True)
    assert manifest["precision"] == "fp16"
    assert np.load(str(tmp_path / "text_encoder_2" / "token_embedding.npy")).dtype == np.float16
    model = onnx.load(str(tmp_path / "unet" / "model.onnx"))
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.input}["time_ids"] == onnx.TensorProto.FLOAT
    kw = dict(EULER_KARRAS, seed=11, cfg_scale=7.0)
    want = pixels(torch_pipe.txt2img("a red cat in a hat", "", **kw))
    got = pixels(sdrt.load(str(tmp_path), backend="onnxruntime").txt2img("a red cat in a hat", "", **kw))
    assert np.abs(got - want).max() <= 4 and psnr(got, want) >= 40


def test_textual_inversion_reaches_both_exported_text_encoders(tmp_path, folder, exported):
    """An SDXL embedding's clip_l / clip_g vectors replace rows of each exported token lookup."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    save_file({"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 32, generator=g)},
              str(tmp_path / "shinystyle.safetensors"))
    with_torch = sdrt.load(folder, embeddings_dir=str(tmp_path))
    ort = sdrt.load(exported[0], backend="onnxruntime", embeddings_dir=str(tmp_path))
    assert ort.embeddings.names() == ["shinystyle"]
    assert {c: db.dim for c, db in ort.embedding_databases.items()} == {"text_encoder": 32, "text_encoder_2": 32}
    want, got = conditioning(with_torch, "a shinystyle cat", "fog"), conditioning(ort, "a shinystyle cat", "fog")
    torch.testing.assert_close(got.conds[0].at(0), want.conds[0].at(0), rtol=0, atol=1e-4)
    torch.testing.assert_close(got.conds[0].pooled_at(0), want.conds[0].pooled_at(0), rtol=0, atol=1e-4)
    plain = conditioning(ort, "a plain cat", "fog")
    assert (got.conds[0].at(0) - plain.conds[0].at(0)).abs().max() > 1e-2  # the vectors were used


def test_refiner_export_runs_its_unet_with_five_time_ids(refiner):
    _, pipe, out = refiner
    ort = sdrt.load(out, backend="onnxruntime")
    assert set(ort.backend.manifest["components"]) == {"text_encoder_2", "unet", "vae_decoder", "vae_encoder"}
    assert (ort.info.family, ort.info.added_time_ids) == ("sdxl-refiner", 5)
    g = torch.Generator().manual_seed(2)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    added = {"text_embeds": torch.randn(2, 24, generator=g),
             "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 6.0], [64.0, 64.0, 0.0, 0.0, 2.5]])}
    t = torch.tensor([300.0, 300.0])
    want = pipe.backend.unet_forward(x, t, ctx, {"added_cond_kwargs": added})
    got = ort.backend.unet_forward(x, t, ctx, {"added_cond_kwargs": added})
    assert (got - want).abs().max() < 1e-4
    other = dict(added, time_ids=added["time_ids"].flip(0))  # the aesthetic scores reach the graph
    assert (ort.backend.unet_forward(x, t, ctx, {"added_cond_kwargs": other}) - got).abs().max() > 1e-4
    with pytest.raises(ValueError, match="this export has no text_encoder "):
        ort.backend.encode_text_sdxl(torch.zeros(1, 77, dtype=torch.long), "text_encoder")


def test_refiner_hand_off_on_onnxruntime_matches_torch(torch_pipe, ort_pipe, refiner):
    """A1111's refiner switch with both models exported: the ORT base loads the ORT refiner (a
    companion loaded with the base's backend) and hands over at half the schedule."""
    refiner_folder, _, refiner_onnx = refiner
    kw = dict(EULER_KARRAS, seed=5, cfg_scale=6.0, refiner_switch_at=0.5)
    want = torch_pipe.txt2img("a red cat in a hat", "fog", refiner_checkpoint=refiner_folder, **kw)
    got = ort_pipe.txt2img("a red cat in a hat", "fog", refiner_checkpoint=refiner_onnx, **kw)
    assert "Refiner: tiny-refiner, Refiner switch at: 0.5" in got.infotexts[0]
    assert np.abs(pixels(got) - pixels(want)).max() <= 1


def test_exported_sdxl_unet_takes_only_its_added_conditions(ort_pipe):
    backend = ort_pipe.backend
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 64)
    added = {"text_embeds": torch.randn(2, 24), "time_ids": torch.full((2, 6), 64.0)}
    with pytest.raises(ValueError, match=r"needs added_cond_kwargs with exactly text_embeds and time_ids \(got None\)"):
        backend.unet_forward(x, t, ctx)
    with pytest.raises(ValueError, match=r"\(got text_embeds\)"):
        backend.unet_forward(x, t, ctx, {"added_cond_kwargs": {"text_embeds": added["text_embeds"]}})
    with pytest.raises(ValueError, match=r"has no UNet taking ControlNet residuals; export the model with --controlnet"):
        backend.unet_forward(x, t, ctx, {"added_cond_kwargs": added, "mid_block_additional_residual": torch.zeros(1)})
    with pytest.raises(ValueError, match="an SDXL export; its text encoders give SDXL's features"):
        backend.encode_text(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="component='text_encoder_3'; valid: text_encoder, text_encoder_2"):
        backend.encode_text_sdxl(torch.zeros(1, 77, dtype=torch.long), "text_encoder_3")
    assert backend.unet_forward(x, t, ctx, {"added_cond_kwargs": added}).shape == x.shape


def test_sd_exports_refuse_sdxl_calls(tmp_path):
    pipe = sdrt.load("toy")
    to_onnx(pipe, str(tmp_path), components=["text_encoder", "unet"])
    backend = sdrt.load(str(tmp_path), backend="onnxruntime").backend
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 64)
    added = {"text_embeds": torch.randn(2, 24), "time_ids": torch.full((2, 6), 64.0)}
    with pytest.raises(ValueError, match=r"UNet takes no extra inputs \(got added_cond_kwargs\)"):
        backend.unet_forward(x, t, ctx, {"added_cond_kwargs": added})
    with pytest.raises(ValueError, match="an SD export; its text encoder gives every layer for clip skip"):
        backend.encode_text_sdxl(torch.zeros(1, 77, dtype=torch.long), "text_encoder")


def test_tensorrt_profiles_and_plan_of_an_sdxl_export(exported):
    out, manifest = exported
    plan = trt_export.plan_engines(out, tensorrt_version="10.3", device="H100")
    unet = plan["components"]["unet"]["profile"]
    assert unet["sample"] == ((1, 4, 64, 64), (2, 4, 64, 64), (8, 4, 192, 192))  # 512-1536 px, batch 1-8
    assert unet["text_embeds"] == ((1, 24), (2, 24), (8, 24)) and unet["time_ids"] == ((1, 6), (2, 6), (8, 6))
    assert unet["encoder_hidden_states"] == ((1, 77, 64), (2, 77, 64), (8, 308, 64))
    te2 = plan["components"]["text_encoder_2"]["profile"]
    assert te2 == {"inputs_embeds": ((1, 77, 32), (2, 77, 32), (8, 77, 32)), "eos_index": ((1,), (2,), (8,))}
    assert plan["components"]["text_encoder_2"]["inputs"] == ["inputs_embeds", "eos_index"]
    toy_xl = trt_export.shape_profile("unet", {**manifest["model"], **manifest["widths"]}, family="toy-xl")
    assert toy_xl["sample"] == ((1, 4, 8, 8), (2, 4, 8, 8), (16, 4, 32, 32))  # 64-256 px, like toy
    refiner_facts = {**manifest["model"], "family": "sdxl-refiner", "context_width": 32, "added_time_ids": 5}
    with pytest.raises(ValueError, match="text_encoder: input 'inputs_embeds' needs text_width in the model facts"):
        trt_export.shape_profile("text_encoder", refiner_facts)


def _coremltools():
    if os.environ.get("CI"):  # a test dependency: a missing coremltools fails in CI rather than skipping
        import coremltools
    else:
        coremltools = pytest.importorskip("coremltools")
    return coremltools


def test_coreml_converts_the_pooled_sdxl_text_encoder(tmp_path, torch_pipe):
    """Core ML takes the same specs (conversion only: running a package needs macOS)."""
    _coremltools()
    from sdrt.export import to_coreml

    manifest = to_coreml(torch_pipe, str(tmp_path), components=["text_encoder_2"])
    entry = manifest["components"]["text_encoder_2"]
    assert entry["inputs"] == {"inputs_embeds": [1, 77, 32], "eos_index": [1]}
    assert entry["outputs"] == {"hidden_states": [1, 77, 32], "text_embeds": [1, 24]}
    assert manifest["model"]["added_time_ids"] == 6


@pytest.mark.slow
def test_coreml_converts_the_sdxl_unet_with_its_added_inputs(tmp_path, torch_pipe):  # ~80 s on one core
    _coremltools()
    from sdrt.export import to_coreml

    unet = to_coreml(torch_pipe, str(tmp_path), components=["unet"])["components"]["unet"]
    assert unet["inputs"] == {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 77, 64],
                              "text_embeds": [2, 24], "time_ids": [2, 6]}
