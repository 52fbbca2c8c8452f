#pragma once
#include <cstdint>

namespace sdrt::cpu {

// q: (batch_heads, q_len, head_dim), k and v: (batch_heads, k_len, head_dim), out like q; all fp32,
// contiguous. out = softmax(q k^T * scale) v per (batch, head).
struct AttentionParams {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t batch_heads;
  int64_t q_len;
  int64_t k_len;
  int64_t head_dim;
  float scale;
};

void attention_f32(const AttentionParams& p);

}  // namespace sdrt::cpu
