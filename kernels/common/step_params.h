// Parameters of the fused per-step kernels, shared by the CPU and CUDA implementations.
//
// Every k-diffusion step update (Euler, Euler ancestral, DPM++ 2M), the classifier-free-guidance
// combine and latent (un)scaling are affine in their tensor inputs once the per-step scalars are
// known: out = bias + sum_k w[k] * in[k]. The scalars are computed once on the host in float64
// (csrc/step_ops.cpp); the kernel then makes a single pass over memory, reading each input once
// and writing the output once, accumulating in fp32 whatever the storage type.
#pragma once
#include <cstdint>

namespace sdrt {

constexpr int kMaxWeightedInputs = 16;

struct WeightedSumParams {
  int n_inputs;
  const void* inputs[kMaxWeightedInputs];
  float weights[kMaxWeightedInputs];
  float bias;
  // When set, inputs 1.. enter as differences from input 0: bias + w0*in0 + sum_k w_k*(in_k - in0).
  // Guidance uses it: cond and uncond are close, and uncond + s*(cond - uncond) keeps the rounding
  // error at the size of the difference rather than of (1 - s)*uncond + s*cond.
  bool deltas_from_first;
  void* out;
  int64_t numel;
};

constexpr int kMaxRgbChannels = 16;

// Latents or decoded images (N, C, H, W) -> uint8 RGB (N, H, W, 3):
// v_j = bias[j] + sum_c x_c * matrix[c][j]; pixel_j = clamp((v_j + 1) / 2, 0, 1) * 255, then
// truncated (A1111's astype(np.uint8)) or rounded (diffusers' numpy_to_pil).
struct RgbParams {
  const void* input;
  uint8_t* out;
  int64_t batch;
  int64_t channels;
  int64_t pixels;  // H * W
  float matrix[kMaxRgbChannels][3];
  float bias[3];
  bool round_to_nearest;
};

#if defined(__CUDACC__)
#define SDRT_HD __host__ __device__
#else
#define SDRT_HD
#endif

// Branch-free so it vectorises: round_offset is 0.5 to round (half up; p >= 0), 0 to truncate.
SDRT_HD inline uint8_t unit_range_to_u8(float v, float round_offset) {
  // Plain compares (not fminf/fmaxf, which are library calls without -ffast-math); NaN -> 0.
  float p = (v + 1.0f) * 0.5f;
  p = p > 0.0f ? p : 0.0f;
  p = p < 1.0f ? p : 1.0f;
  p = p * 255.0f + round_offset;
  p = p < 255.0f ? p : 255.0f;
  return static_cast<uint8_t>(static_cast<int>(p));
}

}  // namespace sdrt
