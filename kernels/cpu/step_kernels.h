#pragma once
#include "../common/dtype.h"
#include "../common/step_params.h"

namespace sdrt::cpu {

void weighted_sum(DType dtype, const WeightedSumParams& p);
void to_rgb_uint8(DType dtype, const RgbParams& p);

}  // namespace sdrt::cpu
