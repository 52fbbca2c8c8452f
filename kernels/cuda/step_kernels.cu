// CUDA twins of kernels/cpu/step_kernels.cpp: same parameters, same math, fp32 accumulation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "device_guard.cuh"
#include "step_kernels.h"

namespace sdrt::cuda {
namespace {

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

template <class T>
__global__ void weighted_sum_kernel(WeightedSumParams p) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
    const float first = load(static_cast<const T*>(p.inputs[0]), i);
    float acc = p.bias + p.weights[0] * first;
    for (int k = 1; k < p.n_inputs; ++k) {
      const float v = load(static_cast<const T*>(p.inputs[k]), i);
      acc += p.weights[k] * (p.deltas_from_first ? v - first : v);
    }
    store(static_cast<T*>(p.out), i, acc);
  }
}

template <class T>
__global__ void to_rgb_kernel(RgbParams p) {
  const int64_t total = p.batch * p.pixels;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const T* x = static_cast<const T*>(p.input);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t image = i / p.pixels;
    const int64_t pixel = i - image * p.pixels;
    const float round_offset = p.round_to_nearest ? 0.5f : 0.0f;
    float v[3] = {p.bias[0], p.bias[1], p.bias[2]};
    for (int64_t c = 0; c < p.channels; ++c) {
      const float xc = load(x, (image * p.channels + c) * p.pixels + pixel);
      for (int j = 0; j < 3; ++j) v[j] += p.matrix[c][j] * xc;
    }
    for (int j = 0; j < 3; ++j) p.out[i * 3 + j] = unit_range_to_u8(v[j], round_offset);
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

// The one place a storage dtype picks a kernel instantiation on the GPU.
template <template <class> class Launch, class Params>
void dispatch_float(DType dtype, const Params& p, int device, uintptr_t stream) {
  const DeviceGuard guard(device);  // torch's current device stays as it was
  auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kFloat32: Launch<float>::run(p, s); break;
    case DType::kFloat16: Launch<__half>::run(p, s); break;
    case DType::kBFloat16: Launch<__nv_bfloat16>::run(p, s); break;
    default: throw std::invalid_argument(std::string("unsupported dtype ") + dtype_name(dtype));
  }
  check(cudaGetLastError(), "kernel launch");
}

constexpr int kThreads = 256;

template <class T> struct LaunchWeightedSum {
  static void run(const WeightedSumParams& p, cudaStream_t s) {
    weighted_sum_kernel<T><<<grid_for(p.numel, kThreads), kThreads, 0, s>>>(p);
  }
};
template <class T> struct LaunchToRgb {
  static void run(const RgbParams& p, cudaStream_t s) {
    to_rgb_kernel<T><<<grid_for(p.batch * p.pixels, kThreads), kThreads, 0, s>>>(p);
  }
};

}  // namespace

void weighted_sum(DType dtype, const WeightedSumParams& p, int device, uintptr_t stream) {
  dispatch_float<LaunchWeightedSum>(dtype, p, device, stream);
}
void to_rgb_uint8(DType dtype, const RgbParams& p, int device, uintptr_t stream) {
  dispatch_float<LaunchToRgb>(dtype, p, device, stream);
}

}  // namespace sdrt::cuda
