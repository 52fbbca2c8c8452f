#pragma once
#include "../common/attention_params.h"

namespace sdrt::cpu {

// out = softmax(q k^T * scale) v per (batch, head); fp32 buffers (see AttentionArgs).
void attention_f32(const AttentionArgs& args);

}  // namespace sdrt::cpu
