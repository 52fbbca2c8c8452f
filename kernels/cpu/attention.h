#pragma once
#include "../common/attention_params.h"
#include "../common/dtype.h"

namespace sdrt::cpu {

// out = softmax(q k^T * scale) v per (batch, head) (see AttentionArgs); float32 or bfloat16
// storage, fp32 arithmetic throughout.
void attention(DType dtype, const AttentionArgs& args);

}  // namespace sdrt::cpu
