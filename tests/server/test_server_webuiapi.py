"""The `webuiapi` client (PyPI; what many A1111 users script with) against `sdrt serve` on the toy
model: txt2img, img2img and inpainting, progress, interrupt and skip. The pictures are read back by
the toy scorer: the server must draw what the prompt says."""
import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import webuiapi
from PIL import Image

from sdrt.toy import data, scorer

PROMPT = "a large red circle in the top left on a white background"
RED_CIRCLE = data.ShapeSpec("circle", "red", "large", "top left")


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="DPM++ 2M", steps=20)


def test_txt2img_draws_the_prompt_and_reports_a1111_info(api):
    result = api.txt2img(prompt=PROMPT, seed=2, cfg_scale=5, width=64, height=64, batch_size=2, scheduler="karras")
    assert len(result.images) == 2 and all(im.size == (64, 64) for im in result.images)
    for image in result.images:
        assert scorer.check(np.asarray(image.convert("RGB")), RED_CIRCLE, "white") == {
            "colour": True, "shape": True, "size": True, "position": True, "background": True}
    info = result.info
    assert info["seed"] == 2 and info["all_seeds"] == [2, 3] and info["sampler_name"] == "DPM++ 2M"
    assert info["width"] == 64 and info["steps"] == 20 and len(info["infotexts"]) == 2
    assert "Seed: 3" in info["infotexts"][1] and "Schedule type: Karras" in info["infotexts"][0]
    assert result.parameters["prompt"] == PROMPT and result.parameters["batch_size"] == 2
    # the PNG carries the infotext, and png-info reads it back
    assert result.images[0].info["parameters"] == info["infotexts"][0]
    buf = io.BytesIO()
    result.images[0].save(buf, format="PNG", pnginfo=_pnginfo(info["infotexts"][0]))
    png = api.session.post(f"{api.baseurl}/png-info",
                           json={"image": base64.b64encode(buf.getvalue()).decode()}).json()
    assert png["info"] == info["infotexts"][0] and png["parameters"]["Seed"] == "2"


def _pnginfo(text):
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    return meta


def test_img2img_and_inpainting(api):
    source = api.txt2img(prompt=PROMPT, seed=2, cfg_scale=5, width=64, height=64, scheduler="karras").image
    # img2img at low strength keeps the picture
    same = api.img2img(images=[source], prompt=PROMPT, denoising_strength=0.3, seed=9, cfg_scale=5, width=64,
                       height=64).image
    assert scorer.check(np.asarray(same.convert("RGB")), RED_CIRCLE, "white")["colour"]
    diff = np.abs(np.asarray(same, dtype=np.int16) - np.asarray(source, dtype=np.int16)).mean()
    assert diff < 30
    # inpaint the bottom-right quarter with a blue square; the rest stays as it was
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 32, 64, 64))
    painted = api.img2img(images=[source], mask_image=mask, prompt="a small blue square in the bottom right",
                          denoising_strength=1.0, inpainting_fill=1, inpaint_full_res=False, mask_blur=0, seed=4,
                          cfg_scale=5, width=64, height=64, steps=20).image
    a, b = np.asarray(painted.convert("RGB"), dtype=np.int16), np.asarray(source.convert("RGB"), dtype=np.int16)
    assert np.abs(a[:28, :28] - b[:28, :28]).max() <= 2  # far from the mask: the original pixels
    blue = (a[36:64, 36:64, 2] > 150) & (a[36:64, 36:64, 0] < 120)
    assert blue.mean() > 0.05  # a blue shape appeared where the mask was


def _run_in_thread(fn):
    out = {}

    def target():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e
    t = threading.Thread(target=target)
    t.start()
    return t, out


def test_progress_then_interrupt_stops_within_a_step(api, server):
    t, out = _run_in_thread(lambda: api.txt2img(prompt=PROMPT, seed=1, steps=150, width=256, height=256, n_iter=2))
    first = server.wait_busy()
    assert first["state"]["job_count"] == 2 and first["state"]["sampling_steps"] == 150
    time.sleep(0.5)
    p = api.get_progress()
    assert 0 < p["progress"] < 0.6 and p["eta_relative"] > 0 and p["state"]["job"] == "txt2img"
    api.interrupt()
    seen = []  # sampling steps reported after the interrupt: at most one more model call
    while t.is_alive():
        state = api.get_progress()["state"]
        if state["job"] == "txt2img":
            seen.append(state["sampling_step"])
        time.sleep(0.01)
    t.join()
    assert "error" not in out, out.get("error")
    assert not seen or max(seen) - seen[0] <= 1, seen
    result = out["result"]
    assert result.info["interrupted"] is True and len(result.images) == 1  # the second batch never ran
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job"] == ""


def test_progress_preview_and_skip(api, server):
    t, out = _run_in_thread(lambda: api.txt2img(prompt=PROMPT, seed=1, steps=60, width=128, height=128, n_iter=2))
    server.wait_busy()
    server.get("progress")  # asks for a preview at the next step
    deadline = time.monotonic() + 20
    preview = None
    while preview is None and time.monotonic() < deadline:
        time.sleep(0.1)
        preview = server.get("progress").json()["current_image"]
    assert preview is not None
    assert Image.open(io.BytesIO(base64.b64decode(preview))).size == (128, 128)
    assert server.get("progress", params={"skip_current_image": True}).json()["current_image"] is None
    job_no = server.get("progress").json()["state"]["job_no"]
    assert job_no == 0
    server.post("skip")  # ends the first batch early; the second runs in full
    deadline = time.monotonic() + 20
    while server.get("progress").json()["state"]["job_no"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.get("progress").json()["state"]["job_no"] == 1
    t.join(120)
    assert "error" not in out, out.get("error")
    assert len(out["result"].images) == 2 and out["result"].info["interrupted"] is False


def test_listings_options_and_model_switch(api, server):
    assert "DPM++ 2M" in [s["name"] for s in api.get_samplers()]
    assert {"name": "karras", "label": "Karras"}.items() <= api.get_schedulers()[2].items()
    models = api.get_sd_models()
    assert models[0]["title"] == "toy"
    options = api.get_options()
    assert options["sd_model_checkpoint"] == "toy" and options["CLIP_stop_at_last_layers"] == 1
    assert server.post("options", {"sd_model_checkpoint": "toy", "CLIP_stop_at_last_layers": 2}).status_code == 200
    r = api.txt2img(prompt=PROMPT, seed=2, steps=2, width=64, height=64)
    assert "Clip skip: 2" in r.info["infotexts"][0]
    assert server.post("options", {"CLIP_stop_at_last_layers": 1}).status_code == 200
    assert server.get("memory").json()["ram"]["total"] > 0
    # any size from 64 up, floored to a multiple of 8 as A1111's latents are
    odd = server.post("txt2img", {"prompt": PROMPT, "steps": 2, "width": 100, "height": 71}).json()
    assert Image.open(io.BytesIO(base64.b64decode(odd["images"][0]))).size == (96, 64)
    assert json.loads(odd["info"])["width"] == 96
    for route in ("prompt-styles", "face-restorers", "hypernetworks"):
        assert server.get(route).json() == []
    upscalers = [u["name"] for u in api.get_upscalers()]
    assert upscalers[:3] == ["None", "Lanczos", "Nearest"] and "ToyESRGAN_2x" in upscalers
    assert [m["name"] for m in api.get_latent_upscale_modes()][:2] == ["Latent", "Latent (antialiased)"]
    assert server.get("embeddings").json() == {"loaded": {}, "skipped": {}}
    assert server.get("loras").json() == [] and server.get("sd-vae").json() == []
    assert json.loads(json.dumps(server.get("scripts").json())) == {"txt2img": [], "img2img": []}


def test_hires_fix_and_extras(api):
    """webuiapi's txt2img with enable_hr (toy: 64 -> 128 with the toy upscaler) and extra_single_image."""
    r = api.txt2img(prompt=PROMPT, seed=2, cfg_scale=5, width=64, height=64, enable_hr=True, hr_scale=2,
                    hr_upscaler="ToyESRGAN_2x", denoising_strength=0.5, hr_second_pass_steps=10, scheduler="karras")
    assert r.image.size == (128, 128)
    assert scorer.check(np.asarray(r.image.convert("RGB")), RED_CIRCLE, "white")["colour"]
    text = r.info["infotexts"][0]
    assert "Size: 64x64" in text and "Denoising strength: 0.5" in text and "Hires upscaler: ToyESRGAN_2x" in text
    assert r.info["denoising_strength"] == 0.5
    up = api.extra_single_image(image=r.image, upscaler_1="Lanczos", upscaling_resize=1.5)
    assert up.image.size == (192, 192)
    assert up.info == "<p>Postprocess upscale by: 1.5, Postprocess upscaler: Lanczos</p>"
    bad = api.session.post(f"{api.baseurl}/extra-single-image", json={"image": "", "upscaler_1": "Nope"})
    assert bad.status_code == 422 and "upscaler_1" in bad.text


def test_toy_xl_with_a_refiner(server):
    """An SDXL model through the API (override_settings) with a refiner: the toy, which shares
    toy-XL's latent space, takes over at 0.8."""
    assert [m["title"] for m in server.get("sd-models").json()][:2] == ["toy", "toy-xl"]
    body = {"prompt": PROMPT, "steps": 20, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 5,
            "seed": 3, "width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": "toy-xl"},
            "refiner_checkpoint": "toy", "refiner_switch_at": 0.8}
    r = server.post("txt2img", body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "Model: toy-xl" in info["infotexts"][0] and "Refiner: toy, Refiner switch at: 0.8" in info["infotexts"][0]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))
    checks = scorer.check(image, RED_CIRCLE, "white")
    assert checks["colour"] and checks["position"], checks
    bad = server.post("txt2img", {**body, "refiner_checkpoint": "nope"})
    assert bad.status_code == 422 and "refiner_checkpoint" in bad.text
