"""The stages' extension points with stand-ins: extra UNet inputs per row, job-scoped patches,
batching policies, post-processors and start points (issue 14)."""
import numpy as np
import pytest
import torch

import sdrt
from sdrt.pipelines import GenerationParams, JobHooks, StartPoint
from sdrt.sampling import FRAMES_AS_BATCH, PER_IMAGE, WHOLE_BATCH
from sdrt.sampling.unet_inputs import COND, UNCOND


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


class Recorder:
    """Wraps the denoiser's UNet call: records every call's outputs and rows; with a `residual`
    extra it adds that residual to the UNet's output (the stand-in for a ControlNet's)."""

    def __init__(self, unet):
        self.unet, self.calls = unet, []

    def __call__(self, x, t, ctx, extras=None):
        out = self.unet(x, t, ctx)
        if extras is not None:
            out = out + extras["residual"]
        self.calls.append({"x": x.clone(), "out": out.clone(), "extras": extras})
        return out


@pytest.fixture
def recorded(pipe):
    original = pipe.denoiser.unet
    recorder = pipe.denoiser.unet = Recorder(original)
    yield recorder
    pipe.denoiser.unet = original


class Residual:
    """A test-only extra input: a fixed random residual on the rows of `kinds`, zero on the others."""

    def __init__(self, kinds, rng):
        self.kinds = kinds
        self.values = torch.from_numpy(rng.standard_normal((8, 4, 8, 8)).astype(np.float32))
        self.seen = []

    def for_rows(self, rows):
        return torch.stack([self.values[r.image * 2 + r.part] if r.kind in self.kinds else torch.zeros(4, 8, 8)
                            for r in rows])

    def __call__(self, call):
        self.seen.append(call.rows)
        return {"residual": self.for_rows(call.rows)}


PROMPTS = ["a red circle in the top left AND a blue square", "a green triangle"]


@pytest.mark.parametrize("kinds", [(COND,), (UNCOND,), (COND, UNCOND)], ids=["cond", "uncond", "both"])
@pytest.mark.parametrize("policy", [PER_IMAGE, WHOLE_BATCH], ids=lambda p: p.name)
def test_extra_input_changes_the_unet_output_by_its_residual_on_its_rows(pipe, recorded, rng, kinds, policy):
    params = GenerationParams(prompt=PROMPTS, seed=3, steps=2, batch_size=2)
    pipe.generate(params, JobHooks(batching=policy))
    plain = list(recorded.calls)
    recorded.calls.clear()
    residual = Residual(kinds, rng)
    pipe.generate(params, JobHooks(batching=policy, extra_inputs=[residual]))
    # the first step's calls see the same x in both runs: outputs differ exactly by the residual
    first = len(policy.groups(2))
    for before, after, rows in zip(plain[:first], recorded.calls[:first], residual.seen[:first]):
        assert torch.equal(before["x"], after["x"])
        r = residual.for_rows(rows)
        assert torch.equal(after["out"], before["out"] + r)
        targeted = [i for i, row in enumerate(rows) if row.kind in kinds]
        untouched = [i for i, row in enumerate(rows) if row.kind not in kinds]
        assert targeted and torch.equal(after["out"][untouched], before["out"][untouched])
    rows = [row for call_rows in residual.seen[:first] for row in call_rows]
    # image 0 has two AND parts: 3 cond rows and 2 uncond rows per step, images indexed in the batch
    assert sorted((r.image, r.kind, r.part) for r in rows) == [
        (0, COND, 0), (0, COND, 1), (0, UNCOND, 0), (1, COND, 0), (1, UNCOND, 0)]


def test_extras_from_two_inputs_add_up(pipe, recorded, rng):
    a, b = Residual((COND,), rng), Residual((COND, UNCOND), rng)
    pipe.generate(GenerationParams(prompt="a red circle", seed=1, steps=1), JobHooks(extra_inputs=[a, b]))
    rows = a.seen[0]
    assert torch.equal(recorded.calls[0]["extras"]["residual"], a.for_rows(rows) + b.for_rows(rows))


def test_frames_as_batch_sends_every_frame_through_one_unet_call(pipe, recorded):
    long_prompt = "a red circle in the top left, " * 12  # > 75 tokens: cond and uncond lengths differ
    frames = 4
    params = GenerationParams(prompt=long_prompt, seed=5, steps=3, batch_size=frames, sampler_name="Euler")
    pipe.generate(params, JobHooks(batching=FRAMES_AS_BATCH))
    assert len(recorded.calls) == 3  # one call per step
    assert all(call["x"].shape[0] == 2 * frames for call in recorded.calls)
    recorded.calls.clear()
    pipe.generate(params, JobHooks(batching=PER_IMAGE))
    assert len(recorded.calls) == 3 * frames * 2  # per image, cond and uncond apart (lengths differ)


class NoisyWeights:
    """A test-only job patch: adds noise to every UNet weight and puts the originals back."""
    name, needs_weights, hint = "noisy", True, ""

    def __init__(self, fail_on_apply=False):
        self.infotext = {"Noisy": "yes"}
        self.fail_on_apply, self.active = fail_on_apply, False

    def apply(self, backend):
        if self.fail_on_apply:
            raise RuntimeError("patch failed")
        saved = {n: p.detach().clone() for n, p in backend.unet.named_parameters()}
        with torch.no_grad():
            for p in backend.unet.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        self.active = True

        def restore():
            with torch.no_grad():
                for n, p in backend.unet.named_parameters():
                    p.copy_(saved[n])
            self.active = False
        return restore


def _weights(pipe):
    return {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}


def _same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


def test_job_patch_is_applied_for_the_job_and_undone_bit_exactly(pipe):
    before = _weights(pipe)
    params = GenerationParams(prompt="a red circle", seed=2, steps=3)
    plain = np.asarray(pipe.generate(params).images[0])
    patch = NoisyWeights()
    seen_active = []
    result = pipe.generate(params, JobHooks(patches=[patch], callback=lambda d: seen_active.append(patch.active)))
    assert seen_active and all(seen_active)
    assert not np.array_equal(np.asarray(result.images[0]), plain)
    assert "Noisy: yes" in result.infotexts[0]
    assert _same(before, _weights(pipe))

    def fail(info):
        raise RuntimeError("callback failed")
    with pytest.raises(RuntimeError, match="callback failed"):
        pipe.generate(params, JobHooks(patches=[NoisyWeights()], callback=fail))
    assert _same(before, _weights(pipe))
    with pytest.raises(RuntimeError, match="patch failed"):  # the first patch is undone when the second fails
        pipe.generate(params, JobHooks(patches=[NoisyWeights(), NoisyWeights(fail_on_apply=True)]))
    assert _same(before, _weights(pipe))
    assert np.array_equal(np.asarray(pipe.generate(params).images[0]), plain)


def test_weight_patches_are_refused_before_anything_on_a_backend_without_patchable_weights(pipe):
    from sdrt.backends.base import BackendCapabilities
    from sdrt.pipelines.patches import applied

    class Frozen:
        name = "frozen"
        capabilities = BackendCapabilities(patchable_weights=False, extra_unet_inputs=False, devices=("cpu",))

    patch = NoisyWeights()
    with pytest.raises(ValueError, match="noisy: the frozen backend cannot patch model weights"):
        with applied([patch], Frozen()):
            pass
    assert not patch.active


def test_post_processors_run_in_order_after_decode(pipe):
    calls = []

    def first(images, batch):
        calls.append(("first", batch.iteration, batch.seeds))
        return [im.transpose(0) for im in images]  # mirrored

    def second(images, batch):
        calls.append(("second", batch.iteration, batch.seeds))
        return images
    params = GenerationParams(prompt="a red circle", seed=7, steps=2, n_iter=2)
    plain = pipe.generate(params).images
    out = pipe.generate(params, JobHooks(post_processors=[first, second])).images
    assert calls == [("first", 0, (7,)), ("second", 0, (7,)), ("first", 1, (8,)), ("second", 1, (8,))]
    assert all(np.array_equal(np.asarray(o), np.asarray(p)[:, ::-1]) for o, p in zip(out, plain))


def test_a_start_point_hook_is_img2img_from_given_latents(pipe):
    """A start point from latents (a hires pass, the previous frame) equals img2img of the image
    those latents encode."""
    from PIL import Image

    init = Image.new("RGB", (64, 64), (200, 30, 30))
    params = GenerationParams(prompt="a blue square", seed=4, steps=6, denoising_strength=0.5)
    want = pipe.img2img(init, "a blue square", seed=4, steps=6, denoising_strength=0.5)
    latents = pipe.encode([init])
    got = pipe.generate(params, JobHooks(start_point=lambda batch: StartPoint(latents, 0.5)))
    assert np.array_equal(np.asarray(got.images[0]), np.asarray(want.images[0]))
    assert got.infotexts == want.infotexts
