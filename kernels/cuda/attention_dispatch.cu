// The one place that picks the CUDA attention instantiation for a (dtype, head dim); the head dims
// are attention_head_dims.h's list.
#include <stdexcept>
#include <string>

#include "attention.h"
#include "attention_impl.cuh"
#include "device_guard.cuh"

namespace sdrt::cuda {

#define SDRT_ATTENTION_INSTANCES(D)                                                      \
  extern template void launch_attention<D, __half>(const AttentionArgs&, cudaStream_t); \
  extern template void launch_attention<D, __nv_bfloat16>(const AttentionArgs&, cudaStream_t);
SDRT_CUDA_ATTENTION_HEAD_DIMS(SDRT_ATTENTION_INSTANCES)
#undef SDRT_ATTENTION_INSTANCES

template <class T>
static void by_head_dim(const AttentionArgs& a, cudaStream_t s) {
  switch (a.head_dim) {
#define SDRT_ATTENTION_CASE(D) \
  case D: launch_attention<D, T>(a, s); break;
    SDRT_CUDA_ATTENTION_HEAD_DIMS(SDRT_ATTENTION_CASE)
#undef SDRT_ATTENTION_CASE
    default: throw std::invalid_argument("attention: head_dim " + std::to_string(a.head_dim) +
                                         " has no CUDA kernel (" + attention_head_dims_text() + ")");
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
