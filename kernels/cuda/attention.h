// Host-side declaration of the CUDA attention kernels (no CUDA header, so csrc/ compiles with a
// plain C++ compiler). fp16 / bf16, head dims kCudaAttentionHeadDims; `stream` is a cudaStream_t.
#pragma once
#include <cstdint>
#include <string>

#include "../common/attention_params.h"
#include "../common/dtype.h"
#include "attention_head_dims.h"

namespace sdrt::cuda {

#define SDRT_HEAD_DIM_ITEM(D) D,
constexpr int kCudaAttentionHeadDims[] = {SDRT_CUDA_ATTENTION_HEAD_DIMS(SDRT_HEAD_DIM_ITEM)};
#undef SDRT_HEAD_DIM_ITEM

constexpr bool has_attention_kernel(int64_t head_dim) {
  for (int d : kCudaAttentionHeadDims)
    if (d == head_dim) return true;
  return false;
}

// "40, 64, 80, 160": for error messages and build_info.
inline std::string attention_head_dims_text() {
  std::string text;
  for (int d : kCudaAttentionHeadDims) text += (text.empty() ? "" : ", ") + std::to_string(d);
  return text;
}

void attention(DType dtype, const AttentionArgs& args, int device, uintptr_t stream);

}  // namespace sdrt::cuda
