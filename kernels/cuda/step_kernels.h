// Host-side declarations of the CUDA step kernels; includes no CUDA header so csrc/ compiles with
// a plain C++ compiler. `stream` is a cudaStream_t passed as an integer (0 = legacy default).
#pragma once
#include <cstdint>

#include "../common/dtype.h"
#include "../common/step_params.h"

namespace sdrt::cuda {

void weighted_sum(DType dtype, const WeightedSumParams& p, int device, uintptr_t stream);
void to_rgb_uint8(DType dtype, const RgbParams& p, int device, uintptr_t stream);

}  // namespace sdrt::cuda
