"""Bad requests get 422 naming the field, before any model work (they are answered while the worker
is busy with another job), and nothing reaches past the model roots or fetches a URL. Bodies holding
what strict JSON cannot write back (NaN, Infinity, lone surrogates, deep nesting) get 422 too, and
the error answers themselves are strict JSON."""
import base64
import functools
import io
import json
import threading

import pytest
from PIL import Image


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


SMALL = b64(Image.new("RGB", (64, 64), (255, 255, 255)))
OK = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64}

TXT2IMG = [  # (changes to a good request, the field the 422 must name)
    ({"width": 4096}, ["width"]), ({"width": 63}, ["width"]), ({"height": 32}, ["height"]),
    ({"width": 2048, "height": 2048, "batch_size": 3}, ["batch_size"]),
    ({"width": 2048, "height": 2048, "batch_size": 2, "n_iter": 9}, ["n_iter"]),
    ({"prompt": "[" + "(a:1.1) " * 70 + ":b:5]"}, ["prompt"]), ({"negative_prompt": "a AND " * 40}, ["negative_prompt"]),
    ({"steps": 0}, ["steps"]), ({"steps": 151}, ["steps"]), ({"batch_size": 9}, ["batch_size"]),
    ({"n_iter": 17}, ["n_iter"]), ({"prompt": "x" * 20_001}, ["prompt"]),
    ({"negative_prompt": "x" * 20_001}, ["negative_prompt"]), ({"seed": -2}, ["seed"]),
    ({"subseed_strength": 2}, ["subseed_strength"]), ({"cfg_scale": 1000}, ["cfg_scale"]),
    ({"width": "wide"}, ["width"]), ({"sampler_name": "Euler b"}, ["sampler_name"]),
    ({"sampler_index": "nope"}, ["sampler_index"]), ({"scheduler": "fancy"}, ["scheduler"]),
    ({"enable_hr": True, "hr_upscaler": "Nope"}, ["hr_upscaler"]), ({"enable_hr": True, "hr_scale": 9}, ["hr_scale"]),
    ({"enable_hr": True, "hr_scale": 4, "width": 1024, "height": 1024}, ["hr_scale"]),
    ({"enable_hr": True, "hr_resize_x": 4096}, ["hr_resize_x"]),
    ({"enable_hr": True, "hr_checkpoint_name": "../x.safetensors"}, ["hr_checkpoint_name"]),
    ({"enable_hr": True, "hr_sampler_name": "Euler b"}, ["hr_sampler_name"]),
    ({"enable_hr": True, "hr_scheduler": "fancy"}, ["hr_scheduler"]),
    ({"enable_hr": True, "denoising_strength": 0}, ["denoising_strength"]),
    ({"enable_hr": True, "hr_prompt": "x" * 20_001}, ["hr_prompt"]),
    ({"restore_faces": True}, ["restore_faces"]),
    ({"save_images": True}, ["save_images"]), ({"styles": ["cinematic"]}, ["styles"]),
    ({"styles": [1.5, 10 ** 400]}, ["styles", 0]),
    ({"seed_resize_from_h": 256}, ["seed_resize_from_h"]), ({"script_name": "x/y/z plot"}, ["script_name"]),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, ["alwayson_scripts", "ADetailer"]),
    ({"alwayson_scripts": {"ControlNet": {"args": [{"weight": 3}]}}},
     ["alwayson_scripts", "ControlNet", "args", 0, "weight"]),
    ({"alwayson_scripts": {"ControlNet": {"args": [{"model": "../cn.safetensors"}]}}},
     ["alwayson_scripts", "ControlNet", "args", 0, "model"]),
    ({"override_settings": {"sd_model_checkpoint": "../../../etc/passwd"}}, ["override_settings", "sd_model_checkpoint"]),
    ({"override_settings": {"sd_model_checkpoint": "/etc/passwd"}}, ["override_settings", "sd_model_checkpoint"]),
    ({"override_settings": {"bogus_option": 1}}, ["override_settings", "bogus_option"]),
    ({"override_settings": {"CLIP_stop_at_last_layers": 40}}, ["override_settings", "CLIP_stop_at_last_layers"]),
]


def bomb() -> str:
    return b64(Image.new("L", (5000, 5000)))  # 25 M pixels (a few KB of PNG) > the 16.7 M limit


IMG2IMG = [
    ({"init_images": []}, ["init_images"]),
    ({"init_images": ["not base64 at all!"]}, ["init_images", 0]),
    ({"init_images": [base64.b64encode(b"just some bytes").decode()]}, ["init_images", 0]),
    ({"init_images": [SMALL, b64(Image.new("RGB", (8, 8)), "GIF")]}, ["init_images", 1]),
    ({"init_images": [b64(Image.new("RGB", (8, 8)), "BMP")]}, ["init_images", 0]),
    ({"init_images": ["http://example.com/cat.png"]}, ["init_images", 0]),
    ({"init_images": ["bomb"]}, ["init_images", 0]),
    ({"mask": b64(Image.new("L", (32, 32)))}, ["mask"]),
    ({"mask": SMALL, "mask_blur_x": 2, "mask_blur_y": 6}, ["mask_blur_x"]),
    ({"resize_mode": 3}, ["resize_mode"]), ({"inpainting_fill": 4}, ["inpainting_fill"]),
    ({"denoising_strength": 1.5}, ["denoising_strength"]), ({"latent_mask": SMALL}, ["latent_mask"]),
    ({"initial_noise_multiplier": 0.5}, ["initial_noise_multiplier"]),
    ({"enable_hr": True}, ["enable_hr"]),  # a txt2img field
]

OPTIONS = [
    ({"sd_model_checkpoint": "../models/x.safetensors"}, ["sd_model_checkpoint"]),
    ({"sd_model_checkpoint": "missing-model"}, ["sd_model_checkpoint"]),
    ({"sd_vae": "../../vae.pt"}, ["sd_vae"]),
    ({"no_such_option": True}, ["no_such_option"]),
    ({"CLIP_stop_at_last_layers": "two"}, ["CLIP_stop_at_last_layers"]),
    ({"samples_format": "jpg"}, ["samples_format"]),
    ({"eta_ddim": 10 ** 400}, ["eta_ddim"]),
]

NAN, INF = float("nan"), float("inf")
DEEP = {"args": functools.reduce(lambda inner, _: [inner], range(80), [])}  # lists 81 deep
UNWRITABLE = [  # (route, body: an object json.dumps writes as is, or raw text, the field the 422 must name)
    ("txt2img", {**OK, "cfg_scale": NAN}, ["cfg_scale"]), ("txt2img", {**OK, "cfg_scale": -INF}, ["cfg_scale"]),
    ("txt2img", '{"prompt": "a cat", "cfg_scale": 1e400}', ["cfg_scale"]),  # Python reads it as infinity
    ("txt2img", {**OK, "width": INF}, ["width"]), ("txt2img", {**OK, "seed": NAN}, ["seed"]),
    ("txt2img", {**OK, "prompt": NAN}, ["prompt"]), ("txt2img", {**OK, "restore_faces": -INF}, ["restore_faces"]),
    ("txt2img", {**OK, "eta": INF}, ["eta"]), ("txt2img", {**OK, "styles": ["a", NAN]}, ["styles", 1]),
    ("txt2img", {**OK, "override_settings": {"eta_ddim": NAN}}, ["override_settings", "eta_ddim"]),
    ("txt2img", {**OK, "override_settings": {"sd_model_checkpoint": INF}},
     ["override_settings", "sd_model_checkpoint"]),
    ("txt2img", {**OK, "override_settings": {"no_such_option": -INF}}, ["override_settings", "no_such_option"]),
    ("txt2img", {**OK, "alwayson_scripts": {"ControlNet": {"args": [{"weight": NAN}]}}},
     ["alwayson_scripts", "ControlNet", "args", 0, "weight"]),
    ("txt2img", {**OK, "script_args": [1, INF]}, ["script_args", 1]),
    ("txt2img", {**OK, "an_unknown_field": {"x": NAN}}, ["an_unknown_field", "x"]),
    ("txt2img", [NAN], [0]), ("txt2img", "NaN", []),
    ("img2img", {**OK, "init_images": [SMALL], "denoising_strength": NAN}, ["denoising_strength"]),
    ("img2img", {**OK, "init_images": [SMALL, INF]}, ["init_images", 1]),
    ("img2img", {**OK, "init_images": [SMALL], "mask_blur": -INF}, ["mask_blur"]),
    ("options", {"eta_ddim": NAN}, ["eta_ddim"]),
    ("options", {"CLIP_stop_at_last_layers": INF}, ["CLIP_stop_at_last_layers"]),
    ("options", {"sd_model_checkpoint": NAN}, ["sd_model_checkpoint"]), ("options", {"sd_vae": -INF}, ["sd_vae"]),
    ("options", [INF], [0]), ("png-info", {"image": NAN}, ["image"]),
    # what UTF-8 cannot write (a lone surrogate), and nesting the JSON encoders cannot write back
    ("txt2img", {**OK, "prompt": "a \ud800 cat"}, ["prompt"]), ("txt2img", {**OK, "width": "\udfff"}, ["width"]),
    ("options", {"\ud800": 1}, ["\\ud800"]), ("txt2img", {**OK, "alwayson_scripts": {"x": DEEP}},
                                                 ["alwayson_scripts", "x", "args", 0, 0]),
]


def _field_named(response, field):
    assert response.status_code == 422, (response.status_code, response.text[:300])
    locs = [d["loc"] for d in response.json()["detail"]]
    assert any(loc[1:1 + len(field)] == field for loc in locs), locs


@pytest.fixture(scope="module")
def busy(server):
    """Keeps the worker busy with a long job (minutes) while the bad requests are sent."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (server.post("txt2img", {**OK, "steps": 150, "width": 512, "height": 512,
                                                                      "n_iter": 16}, timeout=900), done.set()))
    thread.start()
    server.wait_busy()
    yield done
    server.post("interrupt")
    thread.join(120)


@pytest.mark.parametrize("change,field", TXT2IMG, ids=[str(f) for _, f in TXT2IMG])
def test_txt2img_refuses(server, busy, change, field):
    _field_named(server.post("txt2img", {**OK, **change}), field)
    assert not busy.is_set()  # answered while the worker was still on the other job: no model work


@pytest.mark.parametrize("change,field", IMG2IMG, ids=[str(f) for _, f in IMG2IMG])
def test_img2img_refuses(server, busy, change, field):
    request = {**OK, "init_images": [SMALL], **change}
    request["init_images"] = [bomb() if i == "bomb" else i for i in request["init_images"]]
    _field_named(server.post("img2img", request), field)
    assert not busy.is_set()


@pytest.mark.parametrize("change,field", OPTIONS, ids=[str(f) for _, f in OPTIONS])
def test_options_refuse(server, change, field):
    before = server.get("options").json()
    _field_named(server.post("options", change), field)
    assert server.get("options").json() == before  # nothing changed


def _strict_json(response):
    """The answer is JSON that strict parsers read: no NaN / Infinity literals, UTF-8."""
    return json.loads(response.content.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"{c} in the answer"))


@pytest.mark.parametrize("route,body,field", UNWRITABLE, ids=[f"{r}-{f}" for r, _, f in UNWRITABLE])
def test_non_finite_numbers_and_unwritable_text_refused(server, busy, route, body, field):
    raw = body if isinstance(body, str) else json.dumps(body)  # json.dumps writes NaN, Infinity, -Infinity
    r = server.post(route, data=raw.encode(), headers={"content-type": "application/json"})
    _field_named(r, field)
    _strict_json(r)
    assert not busy.is_set()  # refused before any model work


@pytest.mark.parametrize("route", ["txt2img", "img2img", "options", "png-info"])
def test_error_answers_never_echo_what_json_cannot_write(server, route):
    """Bodies that are not UTF-8 JSON: FastAPI's 422 quotes the bytes, escaped."""
    for headers in ({"content-type": "text/plain"}, {}):
        r = server.post(route, data=b"\xff\xfe{", headers=headers)
        assert r.status_code in (400, 422), (r.status_code, r.text[:300])
        _strict_json(r)


def test_options_round_trip_and_huge_numbers(server):
    assert server.post("options", server.get("options").json()).status_code == 200  # webuiapi's set(get())
    r = server.post("txt2img", {**OK, "override_settings": {"eta_ancestral": 10 ** 400}})
    _field_named(r, ["override_settings", "eta_ancestral"])


def test_host_header_must_be_a_loopback_name(server):
    import requests

    assert requests.get(f"{server.api}/progress", headers={"Host": "evil.example:7860"}, timeout=10).status_code == 400
    for host in ("localhost:1234", "127.0.0.1", "[::1]:7860"):
        assert requests.get(f"{server.api}/progress", headers={"Host": host}, timeout=10).status_code == 200


def test_png_info_and_oversized_base64(server):
    _field_named(server.post("png-info", {"image": "@@@"}), ["image"])
    huge = "A" * (32 * 2**20 + 4)
    _field_named(server.post("img2img", {**OK, "init_images": [huge]}), ["init_images", 0])
    r = server.post("txt2img", data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    # corrupt EXIF in a PNG: png-info answers, without the unreadable part
    from PIL import PngImagePlugin

    buf = io.BytesIO()
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a cat\nSteps: 2, Sampler: Euler, Seed: 1")
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta, exif=b"garbage!")
    r = server.post("png-info", {"image": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 200 and r.json()["parameters"]["Seed"] == "1"
