"""A1111's CPU RNG source: per-image generators, variation seeds (slerp), ENSD."""
import torch

from sdrt.pipelines.rng import ImageRNG, resolve_seed, slerp

SHAPE = (4, 8, 8)


def randn(seed, n=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g) for _ in range(n)]


def test_each_image_uses_its_own_seeded_generator():
    rng = ImageRNG(SHAPE, [7, 8])
    first, second = rng.first(), rng.next()
    a, b = randn(7, 2), randn(8, 2)
    assert torch.equal(first[0], a[0]) and torch.equal(first[1], b[0])
    assert torch.equal(second[0], a[1]) and torch.equal(second[1], b[1])


def test_ensd_reseeds_the_later_draws():
    rng = ImageRNG(SHAPE, [7], eta_noise_seed_delta=31337)
    assert torch.equal(rng.first()[0], randn(7)[0])
    assert torch.equal(rng.next()[0], randn(7 + 31337)[0])


def test_variation_strength_blends_from_seed_to_subseed():
    main, sub = randn(3)[0], randn(99)[0]
    assert torch.equal(ImageRNG(SHAPE, [3], subseeds=[99], subseed_strength=0.0).first()[0], main)
    assert torch.allclose(ImageRNG(SHAPE, [3], subseeds=[99], subseed_strength=1.0).first()[0], sub, atol=1e-5)
    mid = ImageRNG(SHAPE, [3], subseeds=[99], subseed_strength=0.5).first()[0]
    assert torch.allclose(mid, slerp(0.5, main, sub))
    # slerp keeps the noise's scale where a linear blend would shrink it
    assert abs(mid.std().item() - main.std().item()) < 0.15 and (0.5 * main + 0.5 * sub).std() < 0.8


def test_slerp_falls_back_to_a1111_linear_blend_when_parallel():
    x = torch.randn(SHAPE)
    assert torch.allclose(slerp(0.25, x, x * 1.0), x * 0.25 + x * 0.75)


def test_resolve_seed():
    assert resolve_seed(5) == 5
    s = resolve_seed(-1)
    assert 0 <= s < 4294967294
