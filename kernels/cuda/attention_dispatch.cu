// The one place that picks the CUDA attention instantiation for a (dtype, head dim).
#include <stdexcept>
#include <string>

#include "attention.h"
#include "attention_impl.cuh"
#include "device_guard.cuh"

namespace sdrt::cuda {

#define SDRT_ATTENTION_INSTANCES(D)                                                      \
  extern template void launch_attention<D, __half>(const AttentionArgs&, cudaStream_t); \
  extern template void launch_attention<D, __nv_bfloat16>(const AttentionArgs&, cudaStream_t);
SDRT_ATTENTION_INSTANCES(40)
SDRT_ATTENTION_INSTANCES(64)
SDRT_ATTENTION_INSTANCES(80)
SDRT_ATTENTION_INSTANCES(160)
#undef SDRT_ATTENTION_INSTANCES

template <class T>
static void by_head_dim(const AttentionArgs& a, cudaStream_t s) {
  switch (a.head_dim) {
    case 40: launch_attention<40, T>(a, s); break;
    case 64: launch_attention<64, T>(a, s); break;
    case 80: launch_attention<80, T>(a, s); break;
    case 160: launch_attention<160, T>(a, s); break;
    default: throw std::invalid_argument("attention: head_dim " + std::to_string(a.head_dim) +
                                         " has no CUDA kernel (40, 64, 80, 160)");
  }
}

void attention(DType dtype, const AttentionArgs& a, int device, uintptr_t stream) {
  const DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kFloat16: by_head_dim<__half>(a, s); break;
    case DType::kBFloat16: by_head_dim<__nv_bfloat16>(a, s); break;
    default: throw std::invalid_argument(std::string("attention: CUDA kernels take float16 or bfloat16, not ") +
                                         dtype_name(dtype));
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("attention: CUDA launch failed: ") + cudaGetErrorString(err));
}

}  // namespace sdrt::cuda
