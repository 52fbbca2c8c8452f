// Fused scaled-dot-product attention on the CPU, fp32: softmax(q k^T * scale) v computed in key
// blocks with an online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022), so
// the (Lq x Lk) score matrix never exists. OpenMP over (batch*heads, query blocks); the inner loops
// are written for the compiler to vectorise, and the function is compiled three times (AVX-512,
// AVX2+FMA, baseline) with GCC's target_clones, the CPU picking one at load time.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace sdrt::cpu {
namespace {

constexpr int kKeyBlock = 64;   // keys per block: the score row of one query fits in 4 AVX-512 registers
constexpr int kRowBlock = 8;    // query rows sharing each loaded key vector
constexpr int kQueryBlock = 64; // query rows per parallel task

// exp(x) for the softmax (arguments <= 0): Cody-Waite range reduction and Cephes' degree-6
// polynomial (relative error ~1e-7), written without calls so that it vectorises.
inline float exp_neg(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SDRT_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define SDRT_CLONES
#endif

// One task: rows [row0, row1) of one (batch, head). kt is K transposed (d-major), its columns
// padded with zeros to `lk_pad` (a multiple of the key block) so the score loop has a fixed length.
SDRT_CLONES
static void attend_rows(const float* q, const float* kt, const float* v, float* o, int64_t row0, int64_t row1,
                        int64_t lk, int64_t lk_pad, int64_t d, float scale, float* acc, float* scores) {
  for (int64_t i0 = row0; i0 < row1; i0 += kRowBlock) {
    const int rows = static_cast<int>(std::min<int64_t>(kRowBlock, row1 - i0));
    float m[kRowBlock], l[kRowBlock];
    for (int r = 0; r < kRowBlock; ++r) {
      m[r] = -std::numeric_limits<float>::infinity();
      l[r] = 0.0f;
    }
    std::fill(acc, acc + kRowBlock * d, 0.0f);
    for (int64_t j0 = 0; j0 < lk; j0 += kKeyBlock) {
      const int cols = static_cast<int>(std::min<int64_t>(kKeyBlock, lk - j0));
      // scores[r][j] = scale * q[i0 + r] . k[j0 + j], accumulated over d with the key vector loaded once
      std::fill(scores, scores + kRowBlock * kKeyBlock, 0.0f);
      for (int64_t c = 0; c < d; ++c) {
        const float* krow = kt + c * lk_pad + j0;
        for (int r = 0; r < rows; ++r) {
          const float qv = q[(i0 + r) * d + c] * scale;
          float* s = scores + r * kKeyBlock;
#pragma omp simd
          for (int j = 0; j < kKeyBlock; ++j) s[j] += qv * krow[j];  // fixed length: padded keys score 0
        }
      }
      for (int r = 0; r < rows; ++r) {  // online softmax: new running max, rescale what was summed so far
        float* s = scores + r * kKeyBlock;
        float block_max = s[0];
        for (int j = 1; j < cols; ++j) block_max = std::max(block_max, s[j]);
        const float m_new = std::max(m[r], block_max);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < cols; ++j) {
          s[j] = exp_neg(s[j] - m_new);
          sum += s[j];
        }
        const float correction = exp_neg(m[r] - m_new);
        l[r] = l[r] * correction + sum;
        m[r] = m_new;
        float* a = acc + r * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) a[c] *= correction;
      }
      for (int j = 0; j < cols; ++j) {  // acc += P V, each value row loaded once for all rows
        const float* vrow = v + (j0 + j) * d;
        for (int r = 0; r < rows; ++r) {
          const float p = scores[r * kKeyBlock + j];
          float* a = acc + r * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) a[c] += p * vrow[c];
        }
      }
    }
    for (int r = 0; r < rows; ++r) {
      const float inv = 1.0f / l[r];
      const float* a = acc + r * d;
      float* out = o + (i0 + r) * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) out[c] = a[c] * inv;
    }
  }
}

void attention_f32(const AttentionParams& p) {
  const int64_t bh = p.batch_heads, lq = p.q_len, lk = p.k_len, d = p.head_dim;
  // K transposed once per (batch, head): the score loop then reads keys contiguously
  const int64_t lk_pad = (lk + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  std::vector<float> kt(static_cast<size_t>(bh * lk_pad * d), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < bh; ++h) {
    const float* k = p.k + h * lk * d;
    float* t = kt.data() + h * lk_pad * d;
    for (int64_t j = 0; j < lk; ++j)
      for (int64_t c = 0; c < d; ++c) t[c * lk_pad + j] = k[j * d + c];
  }
  const int64_t blocks = (lq + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(kRowBlock * d));
    std::vector<float> scores(kRowBlock * kKeyBlock);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < bh * blocks; ++task) {
      const int64_t h = task / blocks, b = task % blocks;
      const int64_t row0 = b * kQueryBlock, row1 = std::min(lq, row0 + kQueryBlock);
      attend_rows(p.q + h * lq * d, kt.data() + h * lk_pad * d, p.v + h * lk * d, p.out + h * lq * d, row0, row1, lk,
                  lk_pad, d, p.scale, acc.data(), scores.data());
    }
  }
}

}  // namespace sdrt::cpu
