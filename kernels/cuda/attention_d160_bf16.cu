// One instantiation of attention_impl.cuh: head dim 160, bf16.
#include "attention_impl.cuh"

namespace sdrt::cuda {
template void launch_attention<160, __nv_bfloat16>(const AttentionArgs&, cudaStream_t);
}  // namespace sdrt::cuda
