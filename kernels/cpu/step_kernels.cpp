// CPU implementations of the fused step kernels: blocked so the inner loops vectorise, OpenMP
// over blocks for large tensors.
#include "step_kernels.h"

#include <algorithm>

namespace sdrt::cpu {
namespace {

constexpr int64_t kBlock = 2048;
constexpr int64_t kParallelMin = 1 << 15;  // below this, threading costs more than it saves

template <class T>
void weighted_sum_impl(const WeightedSumParams& p) {
  T* out = static_cast<T*>(p.out);
  const int64_t n_blocks = (p.numel + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (p.numel >= kParallelMin)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * kBlock;
    const int64_t len = std::min(kBlock, p.numel - begin);
    float acc[kBlock];
    const T* in0 = static_cast<const T*>(p.inputs[0]) + begin;  // n_inputs >= 1 (checked at the boundary)
    for (int64_t j = 0; j < len; ++j) acc[j] = p.bias + p.weights[0] * to_float(in0[j]);
    for (int k = 1; k < p.n_inputs; ++k) {
      const T* in = static_cast<const T*>(p.inputs[k]) + begin;
      const float w = p.weights[k];
      if (p.deltas_from_first) {
        for (int64_t j = 0; j < len; ++j) acc[j] += w * (to_float(in[j]) - to_float(in0[j]));
      } else {
        for (int64_t j = 0; j < len; ++j) acc[j] += w * to_float(in[j]);
      }
    }
    for (int64_t j = 0; j < len; ++j) out[begin + j] = from_float<T>(acc[j]);
  }
}

template <class T>
void to_rgb_impl(const RgbParams& p) {
  const T* x = static_cast<const T*>(p.input);
  const int64_t n_blocks_per_image = (p.pixels + kBlock - 1) / kBlock;
  const int64_t n_blocks = p.batch * n_blocks_per_image;
#pragma omp parallel for schedule(static) if (p.batch * p.pixels >= kParallelMin)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t image = b / n_blocks_per_image;
    const int64_t begin = (b % n_blocks_per_image) * kBlock;
    const int64_t len = std::min(kBlock, p.pixels - begin);
    float acc[3][kBlock];
    for (int j = 0; j < 3; ++j)
      for (int64_t i = 0; i < len; ++i) acc[j][i] = p.bias[j];
    for (int64_t c = 0; c < p.channels; ++c) {
      const T* plane = x + (image * p.channels + c) * p.pixels + begin;
      for (int j = 0; j < 3; ++j) {
        const float m = p.matrix[c][j];
        if (m == 0.0f) continue;  // the identity mix of a decoded RGB image skips 6 of 9 passes
        for (int64_t i = 0; i < len; ++i) acc[j][i] += m * to_float(plane[i]);
      }
    }
    // Quantise per channel (vectorises), then interleave to HWC.
    uint8_t q[3][kBlock];
    const float round_offset = p.round_to_nearest ? 0.5f : 0.0f;
    for (int j = 0; j < 3; ++j)
      for (int64_t i = 0; i < len; ++i) q[j][i] = unit_range_to_u8(acc[j][i], round_offset);
    uint8_t* out = p.out + (image * p.pixels + begin) * 3;
    for (int64_t i = 0; i < len; ++i) {
      out[i * 3 + 0] = q[0][i];
      out[i * 3 + 1] = q[1][i];
      out[i * 3 + 2] = q[2][i];
    }
  }
}

// The one place a storage dtype picks a template instantiation on the CPU.
template <template <class> class Fn, class Params>
void dispatch_float(DType dtype, const Params& p) {
  switch (dtype) {
    case DType::kFloat32: Fn<float>::run(p); return;
    case DType::kFloat16: Fn<half_t>::run(p); return;
    case DType::kBFloat16: Fn<bfloat16_t>::run(p); return;
    default: throw std::invalid_argument(std::string("unsupported dtype ") + dtype_name(dtype));
  }
}

template <class T> struct WeightedSum { static void run(const WeightedSumParams& p) { weighted_sum_impl<T>(p); } };
template <class T> struct ToRgb { static void run(const RgbParams& p) { to_rgb_impl<T>(p); } };

}  // namespace

void weighted_sum(DType dtype, const WeightedSumParams& p) { dispatch_float<WeightedSum>(dtype, p); }
void to_rgb_uint8(DType dtype, const RgbParams& p) { dispatch_float<ToRgb>(dtype, p); }

}  // namespace sdrt::cpu
