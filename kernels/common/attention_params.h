// Arguments of the fused attention kernels (CPU and CUDA): q (batch_heads, q_len, head_dim), k and
// v (batch_heads, k_len, head_dim), out like q, contiguous, all of one dtype.
#pragma once
#include <cstdint>

namespace sdrt {

struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t batch_heads;
  int64_t q_len;
  int64_t k_len;
  int64_t head_dim;
  float scale;
};

}  // namespace sdrt
