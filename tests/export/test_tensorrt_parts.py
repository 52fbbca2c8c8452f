"""The parts of the TensorRT stage that need no TensorRT (it cannot be installed here): shape
profiles from the export specs, the run-time range check, engine cache keys, and the torch ->
ONNX weight-name map a refit uses. The engine build and refit themselves are not exercised."""
import os

import numpy as np
import pytest
import torch

if os.environ.get("CI"):
    import onnx
else:
    onnx = pytest.importorskip("onnx")

import sdrt
from sdrt.export import tensorrt_export as trt_export
from sdrt.export.onnx_export import export_component

SD1 = {"family": "sd1", "default_size": 512, "unet_in_channels": 4, "context_width": 768, "text_width": 768}


def test_unet_profile_covers_the_issue_ranges():
    p = trt_export.shape_profile("unet", SD1)
    assert p["sample"] == ((1, 4, 32, 32), (2, 4, 64, 64), (16, 4, 128, 128))  # 256-1024 px, CFG batch
    assert p["timestep"] == ((1,), (2,), (16,))
    assert p["encoder_hidden_states"] == ((1, 77, 768), (2, 77, 768), (16, 308, 768))  # 1-4 chunks
    text = trt_export.shape_profile("text_encoder", SD1)
    assert text["inputs_embeds"] == ((1, 77, 768), (2, 77, 768), (16, 77, 768))
    dec = trt_export.shape_profile("vae_decoder", SD1, batch=(1, 4), size=(512, 768))
    assert dec["latent"] == ((1, 4, 64, 64), (2, 4, 64, 64), (4, 4, 96, 96))
    inpaint = trt_export.shape_profile("unet", {**SD1, "unet_in_channels": 9})
    assert inpaint["sample"][0][1] == 9


def test_bad_profiles_and_out_of_range_inputs_say_what_to_change():
    with pytest.raises(ValueError, match="multiples of 64"):
        trt_export.shape_profile("unet", SD1, size=(300, 1024))
    with pytest.raises(ValueError, match="batch"):
        trt_export.shape_profile("unet", SD1, batch=(4, 2))
    p = trt_export.shape_profile("unet", SD1)
    trt_export.check_in_profile(p, {"sample": (2, 4, 64, 96)})
    with pytest.raises(ValueError, match=r"unet.plan: input 'sample' axis 2 is 192, outside the engine's range 32-128; "
                                         r"rebuild"):
        trt_export.check_in_profile(p, {"sample": (2, 4, 192, 64)}, engine="unet.plan")


def test_engine_cache_key_changes_with_what_makes_an_engine_different():
    p = trt_export.shape_profile("unet", SD1)
    key = trt_export.engine_cache_key("abc", p, fp16=True, refittable=True, tensorrt_version="10.3", device="H100")
    assert key == trt_export.engine_cache_key("abc", p, fp16=True, refittable=True, tensorrt_version="10.3",
                                              device="H100")
    others = [trt_export.engine_cache_key("abd", p, fp16=True, refittable=True, tensorrt_version="10.3", device="H100"),
              trt_export.engine_cache_key("abc", p, fp16=False, refittable=True, tensorrt_version="10.3", device="H100"),
              trt_export.engine_cache_key("abc", p, fp16=True, refittable=True, tensorrt_version="10.4", device="H100"),
              trt_export.engine_cache_key("abc", p, fp16=True, refittable=True, tensorrt_version="10.3", device="L4"),
              trt_export.engine_cache_key("abc", trt_export.shape_profile("unet", SD1, batch=(1, 8)), fp16=True,
                                          refittable=True, tensorrt_version="10.3", device="H100")]
    assert len({key, *others}) == 6


def test_refit_map_finds_every_lora_target_of_the_exported_unet(tmp_path):
    """A LoRA changes attention projections, feed-forward and convolution weights; each must be
    found in the ONNX graph (by value: linear weights become transposed MatMul constants)."""
    pipe = sdrt.load("toy")
    path = tmp_path / "unet" / "model.onnx"
    export_component(pipe, "unet", str(path))
    model = onnx.load(str(path))
    state = {k: v.numpy() for k, v in pipe.unet.state_dict().items()}
    mapping = trt_export.refit_name_map(state, model)
    targets = [k for k in state if k.endswith(".weight") and any(
        part in k for part in ("to_q", "to_k", "to_v", "to_out.0", "ff.net", "proj_in", "proj_out", "conv1", "conv2"))]
    assert targets and all(k in mapping for k in targets), [k for k in targets if k not in mapping][:5]
    # the mapped initializer holds exactly that parameter (transposed where the exporter folded it)
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name in targets:
        onnx_name, transposed = mapping[name]
        want = state[name].T if transposed else state[name]
        assert np.array_equal(inits[onnx_name], want)
    assert any(t for _, t in mapping.values())  # some linear weights were stored transposed


def test_building_without_tensorrt_says_so(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on these machines: the import fails
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        trt_export.build_engine(str(tmp_path / "x.onnx"), str(tmp_path / "x.plan"), {})


def test_engine_plan_from_an_onnx_export(tmp_path):
    from sdrt.export.onnx_export import to_onnx

    pipe = sdrt.load("toy")
    to_onnx(pipe, str(tmp_path / "onnx"), components=["unet", "vae_decoder"])
    plan = trt_export.plan_engines(str(tmp_path / "onnx"), size=(64, 256), tensorrt_version="10.3", device="H100")
    unet = plan["components"]["unet"]
    assert unet["profile"]["sample"] == ((1, 4, 8, 8), (2, 4, 8, 8), (16, 4, 32, 32))
    assert unet["engine"] == f"unet/{unet['cache_key']}.plan"
    again = trt_export.plan_engines(str(tmp_path / "onnx"), size=(64, 256), tensorrt_version="10.3", device="H100")
    assert again["components"]["unet"]["cache_key"] == unet["cache_key"]  # the same engine is reused
    assert trt_export.plan_engines(str(tmp_path / "onnx"), size=(64, 512), tensorrt_version="10.3",
                                   device="H100")["components"]["unet"]["cache_key"] != unet["cache_key"]
    to_onnx(pipe, str(tmp_path / "onnx16"), components=["unet"], fp16=True)
    with pytest.raises(ValueError, match="from an fp32 ONNX export"):
        trt_export.plan_engines(str(tmp_path / "onnx16"))
    with pytest.raises(ValueError, match="not an sdrt ONNX export"):
        trt_export.plan_engines(str(tmp_path))


def test_engine_plan_of_an_export_with_a_controlnet_fits_its_graphs(tmp_path):
    """The ControlNet's and the controlled UNet's profiles: at the profile's min and max shapes the
    ControlNet graph (run on ONNX Runtime) gives exactly the residual shapes the UNet's profile
    declares, and every graph input has a profile of its rank."""
    import onnxruntime as ort

    from sdrt.export.onnx_export import to_onnx

    to_onnx(sdrt.load("toy"), str(tmp_path), components=["unet"], controlnets=["toy_seg"])
    plan = trt_export.plan_engines(str(tmp_path), size=(64, 128), tensorrt_version="10.3", device="H100")
    unet, control = plan["components"]["unet_controlled"], plan["controlnets"]["toy_seg"]
    assert control["engine"] == f"controlnets/toy_seg/{control['cache_key']}.plan" and control["title"] == "toy_seg"
    session = ort.InferenceSession(control["onnx"], providers=["CPUExecutionProvider"])
    for graph, entry in ((session, control), (ort.InferenceSession(unet["onnx"], providers=["CPUExecutionProvider"]),
                                              unet)):
        assert {i.name: len(i.shape) for i in graph.get_inputs()} == {k: len(v[0]) for k, v in entry["profile"].items()}
    for end in (0, 2):  # the profile's min and max shapes
        feed = {name: np.random.default_rng(end).random(shapes[end], dtype=np.float32)
                for name, shapes in control["profile"].items()}
        outputs = session.run(None, feed)
        assert [o.shape for o in outputs] == [unet["profile"][name][end] for name in control["outputs"]]
    assert unet["profile"]["mid"][2] == (16, 128, 8, 8) and control["profile"]["controlnet_cond"][0] == (1, 3, 64, 64)


def test_tensorrt_backend_refuses_clearly_without_a_gpu_or_engines(tmp_path):
    with pytest.raises(ValueError, match="device=.cpu.: the tensorrt backend runs on a CUDA GPU"):
        sdrt.load(str(tmp_path), backend="tensorrt", device="cpu")
    with pytest.raises(ValueError, match="the tensorrt backend runs an export folder"):
        sdrt.load(str(tmp_path / "missing"), backend="tensorrt")
