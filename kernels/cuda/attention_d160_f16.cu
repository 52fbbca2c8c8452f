// One instantiation of attention_impl.cuh: head dim 160, f16.
#include "attention_impl.cuh"

namespace sdrt::cuda {
template void launch_attention<160, __half>(const AttentionArgs&, cudaStream_t);
}  // namespace sdrt::cuda
