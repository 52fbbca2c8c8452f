"""The sd-webui-controlnet extension's API on `sdrt serve` (toy model): the /controlnet/* routes
(version, settings, module_list, model_list, control_types, detect) and units sent as
alwayson_scripts.ControlNet.args with txt2img / img2img, with a random toy ControlNet in the
server's models/ControlNet folder."""
import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from server_process import ServerProcess

CN_NAME = "control_v11p_toy_canny"  # a diffusers folder; "11" makes it Canny's default model
BASE = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 3, "cfg_scale": 5}


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def picture(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((width // 6, height // 6, width * 2 // 3, height * 3 // 4), fill="red")
    return image


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def unit(**changes) -> dict:
    """A unit as the extension's own API tests write them."""
    return {"enabled": True, "module": "canny", "model": CN_NAME, "weight": 1.0, "image": b64(picture()),
            "resize_mode": "Crop and Resize", "processor_res": 64, "threshold_a": 100, "threshold_b": 200,
            "guidance_start": 0.0, "guidance_end": 1.0, "pixel_perfect": False, "control_mode": "Balanced",
            **changes}


def with_units(*units, key: str = "ControlNet", **changes) -> dict:
    return {**BASE, **changes, "alwayson_scripts": {key: {"args": list(units)}}}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    """A models root holding one random toy ControlNet (every weight random, the zero convolutions
    too, so it visibly changes the picture)."""
    import sdrt
    from sdrt.models import toy as toy_config

    root = tmp_path_factory.mktemp("models")
    controlnet = toy_config.build_controlnet(sdrt.load("toy").unet)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    controlnet.save_pretrained(root / "models" / "ControlNet" / CN_NAME, safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def cn_server(models_root):
    s = ServerProcess("--models-dir", str(models_root)).wait_ready()
    yield s
    assert s.terminate() == 0


def get(server, path: str, **params) -> dict:
    r = server.get(f"../../controlnet/{path}", params=params)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def post(server, path: str, body: dict):
    return server.post(f"../../controlnet/{path}", body)


def field_named(response, loc: list) -> str:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    details = response.json()["detail"]
    assert [d["loc"] for d in details] == [["body", *loc]], details
    return details[0]["msg"]


def infotext(response) -> str:
    assert response.status_code == 200, response.text[:500]
    return json.loads(response.json()["info"])["infotexts"][0]


# --- the listings ----------------------------------------------------------------------------------

def test_version_and_settings(cn_server):
    assert get(cn_server, "version") == {"version": 3}
    assert get(cn_server, "settings") == {"control_net_unit_count": 3}


def test_module_list_names_labels_and_sliders(cn_server):
    names = get(cn_server, "module_list")
    assert names["module_list"][0] == "none" and "canny" in names["module_list"]
    assert set(names["module_detail"]) == set(names["module_list"])
    canny = names["module_detail"]["canny"]
    assert canny["model_free"] is False
    assert canny["sliders"] == [{"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
                                {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
                                {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}]
    assert get(cn_server, "module_list", alias_names="false") == names
    labels = get(cn_server, "module_list", alias_names="true")
    assert "invert (from white bg & black line)" in labels["module_list"] and "invert" not in labels["module_list"]
    assert "inpaint_global_harmonious" in labels["module_detail"]
    assert len(labels["module_list"]) == len(names["module_list"])


def test_model_list(cn_server):
    models = get(cn_server, "model_list")["model_list"]
    assert models[:2] == ["toy_canny", "toy_seg"] and CN_NAME in models and "None" not in models
    assert get(cn_server, "model_list", update="false")["model_list"] == models


def test_control_types(cn_server):
    types = get(cn_server, "control_types")["control_types"]
    keys = list(types)
    assert keys[0] == "All" and keys[1:] == sorted(keys[1:]) and "Canny" in keys
    assert types["All"]["default_option"] == "none" and types["All"]["default_model"] == "None"
    assert types["All"]["model_list"][0] == "None" and CN_NAME in types["All"]["model_list"]
    canny = types["Canny"]
    assert canny["module_list"] == ["none", "canny", "invert (from white bg & black line)"]
    assert canny["default_option"] == "canny"
    assert canny["model_list"] == ["None", "toy_canny", CN_NAME]
    assert canny["default_model"] == CN_NAME  # the first with "11" in its name
    assert types["Segmentation"]["model_list"] == ["None", "toy_seg"]  # the tag's filter "seg"
    shuffle = types["Shuffle"]
    assert shuffle["model_list"] == ["None"] and shuffle["default_model"] == "None"
    assert types["InstructP2P"]["module_list"] == ["none"] and types["InstructP2P"]["default_option"] == "none"


# --- detect ----------------------------------------------------------------------------------------

def test_detect_canny_scales_the_short_side(cn_server):
    r = post(cn_server, "detect", {"controlnet_module": "canny", "controlnet_input_images": [b64(picture(64, 32))]})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["info"] == "Success" and len(body["images"]) == 1
    edges = decoded(body["images"][0])
    assert edges.size == (1024, 512)  # processor_res -1: 512 on the short side
    assert set(np.unique(np.asarray(edges.convert("L")))) == {0, 255}  # an edge map
    small = post(cn_server, "detect", {"controlnet_module": "canny", "controlnet_processor_res": 64,
                                       "controlnet_input_images": [b64(picture(64, 32)), b64(picture(32, 32))]})
    assert [decoded(im).size for im in small.json()["images"]] == [(128, 64), (64, 64)]
    # webuiapi sends `controlnet_images` with data URLs
    webuiapi_style = post(cn_server, "detect", {"controlnet_module": "canny", "controlnet_processor_res": 64,
                                                "controlnet_images": ["data:image/png;base64," + b64(picture())]})
    assert decoded(webuiapi_style.json()["images"][0]).size == (64, 64)


def test_detect_inpaint_takes_masks(cn_server):
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    r = post(cn_server, "detect", {"controlnet_module": "inpaint_only", "controlnet_input_images": [b64(picture())],
                                   "controlnet_masks": [b64(mask)]})
    shown = decoded(r.json()["images"][0])
    assert shown.mode == "RGBA" and shown.getpixel((10, 10))[3] == 128 and shown.getpixel((50, 10))[3] == 255


def test_detect_errors(cn_server):
    image = b64(picture())
    cases = [({"controlnet_module": "no_such_module", "controlnet_input_images": [image]}, "Module not available"),
             ({"controlnet_module": "canny"}, "No image selected"),
             ({"controlnet_module": "inpaint_only", "controlnet_input_images": [image]},
              "Preprocessor inpaint_only requires `controlnet_masks` param.")]
    for body, detail in cases:
        r = post(cn_server, "detect", body)
        assert (r.status_code, r.json()) == (422, {"detail": detail})
    field_named(post(cn_server, "detect", {"controlnet_module": "canny", "controlnet_input_images": [image, "@@"]}),
                ["controlnet_input_images", 1])
    missing = post(cn_server, "detect", {"controlnet_module": "softedge_hed", "controlnet_input_images": [image]})
    assert missing.status_code == 422 and "never downloads" in missing.json()["detail"]  # its weight file is absent
    elongated = b64(Image.new("RGB", (4096, 1)))  # 512 on the short side: a 2 G-pixel map
    field_named(post(cn_server, "detect", {"controlnet_module": "canny", "controlnet_input_images": [elongated]}),
                ["controlnet_input_images", 0])


# --- units on txt2img / img2img --------------------------------------------------------------------

def test_txt2img_with_a_unit(cn_server):
    plain = cn_server.post("txt2img", BASE)
    controlled = cn_server.post("txt2img", with_units(unit()))
    text = infotext(controlled)
    assert "ControlNet 0: " in text and f"Model: {CN_NAME}" in text and "Module: canny" in text
    assert "ControlNet 1" not in text
    assert controlled.json()["images"] != plain.json()["images"]
    # the request is echoed as sent
    assert controlled.json()["parameters"]["alwayson_scripts"]["ControlNet"]["args"][0]["model"] == CN_NAME


def test_disabled_unit_changes_nothing(cn_server):
    plain = cn_server.post("txt2img", BASE)
    disabled = cn_server.post("txt2img", with_units(unit(enabled=False), key="controlnet"))  # any case
    assert "ControlNet" not in infotext(disabled)
    assert disabled.json()["images"] == plain.json()["images"]


def test_img2img_unit_without_image_uses_the_init_image(cn_server):
    r = cn_server.post("img2img", with_units(unit(image=""), init_images=[b64(picture())], denoising_strength=0.5))
    assert "ControlNet 0: " in infotext(r)


UNIT_ERRORS = [  # (the unit, the field the 422 must name after alwayson_scripts.ControlNet.args.0)
    (unit(weight=3), ["weight"]), (unit(guidance_start=0.8, guidance_end=0.2), ["guidance_start"]),
    (unit(module="no_such_module"), ["module"]), (unit(resize_mode="Sideways"), ["resize_mode"]),
    (unit(model="../../etc/passwd"), ["model"]), (unit(model="/etc/passwd"), ["model"]),
    (unit(model="no_such_model"), ["model"]), (unit(image=None), ["image"]), (unit(image="@@"), ["image"]),
    (unit(image={"image": b64(picture()), "mask": "@@"}), ["image", "mask"]),
    (unit(image=b64(Image.new("RGB", (8192, 1)))), ["image"]),  # a 64 x 524288 map at processor_res 64
]


@pytest.mark.parametrize("bad,field", UNIT_ERRORS, ids=[str(f) for _, f in UNIT_ERRORS])
def test_unit_errors_name_the_field(cn_server, bad, field):
    msg = field_named(cn_server.post("txt2img", with_units(unit(), bad)), ["alwayson_scripts", "ControlNet", "args", 1,
                                                                           *field])
    assert msg.startswith("alwayson_scripts.ControlNet.args[1].") or "base64" in msg


def test_errors_found_by_the_worker_name_the_unit_field(cn_server):
    """A preprocessor whose weight file is missing fails when the job prepares its units."""
    msg = field_named(cn_server.post("txt2img", with_units(unit(module="softedge_hed"))),
                      ["alwayson_scripts", "ControlNet", "args", 0, "module"])
    assert msg.startswith("alwayson_scripts.ControlNet.args[0].module=") and "never downloads" in msg


def test_bad_script_shapes_and_other_scripts(cn_server):
    field_named(cn_server.post("txt2img", {**BASE, "alwayson_scripts": {"ControlNet": {"args": {}}}}),
                ["alwayson_scripts", "ControlNet", "args"])
    field_named(cn_server.post("txt2img", {**BASE, "alwayson_scripts": {"controlnet": []}}),
                ["alwayson_scripts", "controlnet", "args"])
    field_named(cn_server.post("txt2img", with_units("canny")), ["alwayson_scripts", "ControlNet", "args", 0])
    field_named(cn_server.post("txt2img", with_units(unit(weight=-1), key="controlnet")),
                ["alwayson_scripts", "controlnet", "args", 0, "weight"])
    field_named(cn_server.post("txt2img", {**BASE, "alwayson_scripts": {"ADetailer": {"args": []}}}),
                ["alwayson_scripts", "ADetailer"])
    field_named(cn_server.post("img2img", {**BASE, "init_images": [b64(picture())],
                                           "alwayson_scripts": {"ControlNet": {"args": []}, "Roop": {"args": []}}}),
                ["alwayson_scripts", "Roop"])
    assert cn_server.post("txt2img", with_units()).status_code == 200  # no units: plain txt2img


def test_webuiapi_client(cn_server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=cn_server.port, sampler="Euler", steps=3)
    assert api.controlnet_version() == 3 and CN_NAME in api.controlnet_model_list()
    assert "canny" in api.controlnet_module_list()
    cn_unit = webuiapi.ControlNetUnit(image=picture(), module="canny", model=CN_NAME, processor_res=64,
                                      threshold_a=100, threshold_b=200)
    # a fresh alwayson_scripts: webuiapi 0.9.17 writes the units into its mutable default dict, which
    # would send them with every later call of this process
    result = api.txt2img(prompt="a red circle", width=64, height=64, seed=3, controlnet_units=[cn_unit],
                         alwayson_scripts={})
    text = result.info["infotexts"][0]
    assert "ControlNet 0: " in text and "Resize Mode: Resize and Fill" in text  # webuiapi's default
    detected = api.controlnet_detect([picture(64, 32)], module="canny", processor_res=64)
    assert detected.info == "Success" and detected.image.size == (128, 64)
