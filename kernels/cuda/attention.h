// Host-side declaration of the CUDA attention kernels (no CUDA header, so csrc/ compiles with a
// plain C++ compiler). fp16 / bf16, head dims kCudaAttentionHeadDims; `stream` is a cudaStream_t.
#pragma once
#include <cstdint>

#include "../common/attention_params.h"
#include "../common/dtype.h"

namespace sdrt::cuda {

constexpr int kCudaAttentionHeadDims[] = {40, 64, 80, 160};

void attention(DType dtype, const AttentionArgs& args, int device, uintptr_t stream);

}  // namespace sdrt::cuda
