// The one template of the CUDA attention kernels: softmax(q k^T * scale) v with an online softmax
// over shared-memory key tiles (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022), fp32
// accumulation for fp16 / bf16 storage. One thread per query row, 64 rows per block. Each
// attention_d<D>_<dtype>.cu instantiates it once; attention_dispatch.cu picks one.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/attention_params.h"

namespace sdrt::cuda {

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

constexpr int kAttnRows = 64;  // query rows (threads) per block
constexpr int kAttnKeys = 32;  // keys per shared-memory tile

template <int D, class T>
__global__ void attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                 T* __restrict__ out, int64_t q_len, int64_t k_len, float scale) {
  __shared__ float ks[kAttnKeys][D];
  __shared__ float vs[kAttnKeys][D];
  const int64_t h = blockIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kAttnRows + threadIdx.x;
  const bool active = row < q_len;
  const T* qh = q + h * q_len * D;
  const T* kh = k + h * k_len * D;
  const T* vh = v + h * k_len * D;
  float qr[D], acc[D];
#pragma unroll
  for (int c = 0; c < D; ++c) {
    qr[c] = active ? to_f(qh[row * D + c]) * scale : 0.0f;
    acc[c] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t j0 = 0; j0 < k_len; j0 += kAttnKeys) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kAttnKeys), k_len - j0));
    for (int idx = threadIdx.x; idx < n * D; idx += blockDim.x) {
      ks[idx / D][idx % D] = to_f(kh[j0 * D + idx]);
      vs[idx / D][idx % D] = to_f(vh[j0 * D + idx]);
    }
    __syncthreads();
    if (active) {
      for (int j = 0; j < n; ++j) {
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < D; ++c) s += qr[c] * ks[j][c];
        const float m_new = fmaxf(m, s);
        const float correction = __expf(m - m_new);  // 0 on the first key (m = -inf)
        const float p = __expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int c = 0; c < D; ++c) acc[c] = acc[c] * correction + p * vs[j][c];
        m = m_new;
      }
    }
    __syncthreads();
  }
  if (active) {
    const float inv = 1.0f / l;
#pragma unroll
    for (int c = 0; c < D; ++c) out[h * q_len * D + row * D + c] = from_f<T>(acc[c] * inv);
  }
}

template <int D, class T>
void launch_attention(const AttentionArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((a.q_len + kAttnRows - 1) / kAttnRows), static_cast<unsigned>(a.batch_heads));
  attention_kernel<D, T><<<grid, kAttnRows, 0, stream>>>(static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                                                          static_cast<const T*>(a.v), static_cast<T*>(a.out),
                                                          a.q_len, a.k_len, a.scale);
}

}  // namespace sdrt::cuda
