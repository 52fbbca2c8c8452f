// Fused scaled-dot-product attention on the CPU, fp32 arithmetic (fp32 or bf16 storage): softmax(q k^T * scale) v computed in key
// blocks with an online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022), so
// the (Lq x Lk) score matrix never exists. OpenMP over (batch*heads, query blocks); the inner loops
// are written for the compiler to vectorise, and the function is compiled three times (AVX-512,
// AVX2+FMA, baseline) with GCC's target_clones, the CPU picking one at load time.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace sdrt::cpu {
namespace {

constexpr int kKeyBlock = 64;   // keys per block: the score row of one query fits in 4 AVX-512 registers
constexpr int kRowBlock = 8;    // query rows sharing each loaded key vector
constexpr int kQueryBlock = 96; // query rows per parallel task: 16 tiles of 6 rows

// exp(x) for the softmax (arguments <= 0): Cody-Waite range reduction and Cephes' degree-6
// polynomial (relative error ~1e-7), written without calls so that it vectorises.
inline float exp_neg(float x) {
  x = x > -87.0f ? x : -87.0f;  // also maps NaN somewhere defined: the int conversion below must not see it
  x = x < 0.0f ? x : 0.0f;
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

// One query row's online-softmax update for a key block: scores s become probabilities under the
// new running max m, l (their running sum) and the row's accumulator are rescaled to it. Forced
// inline: each vector clone below must get its own vectorised copy (measured: a call costs ~20%).
__attribute__((always_inline)) inline void online_softmax_row(float* s, int cols, float& m, float& l, float* acc_row, int64_t d) {
  float block_max = s[0];
  for (int j = 1; j < cols; ++j) block_max = std::max(block_max, s[j]);
  const float m_new = std::max(m, block_max);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < cols; ++j) {
    s[j] = exp_neg(s[j] - m_new);
    sum += s[j];
  }
  const float correction = exp_neg(m - m_new);
  l = l * correction + sum;
  m = m_new;
#pragma omp simd
  for (int64_t c = 0; c < d; ++c) acc_row[c] *= correction;
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
        online_softmax_row(scores + r * kKeyBlock, cols, m[r], l[r], acc + r * d, d);
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

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SDRT_HAVE_AVX512_PATH 1
}  // namespace sdrt::cpu
#include <immintrin.h>
namespace sdrt::cpu {

// SDRT_ATTENTION_AVX512=0 forces the compiler-vectorised path (the tests run both).
static bool avx512_enabled() {
  const char* env = std::getenv("SDRT_ATTENTION_AVX512");
  if (env != nullptr && env[0] == '0') return false;
  return __builtin_cpu_supports("avx512f");
}

// AVX-512 micro-kernels, register-tiled like a GEMM: 6 query rows x 64 keys of scores in 24
// registers (each key vector loaded once for 6 rows), and P V as 6 rows x 64 head-dim columns
// (measured on Zen 5: 6 rows 8% faster than 4 at 4096 tokens; 7 would not fit 32 registers).
constexpr int kTileRows = 6;

__attribute__((target("avx512f"))) static inline __mmask16 lanes(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>(remaining <= 0 ? 0 : (1u << remaining) - 1u);
}

__attribute__((target("avx512f")))
static void scores_tile(const float* const* qrows, const float* kt, int64_t lk_pad, int64_t d, float scale,
                        float* scores) {
  __m512 acc[kTileRows][4];
  for (int r = 0; r < kTileRows; ++r)
    for (int t = 0; t < 4; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    const float* krow = kt + c * lk_pad;
    const __m512 k0 = _mm512_loadu_ps(krow), k1 = _mm512_loadu_ps(krow + 16), k2 = _mm512_loadu_ps(krow + 32),
                 k3 = _mm512_loadu_ps(krow + 48);
    for (int r = 0; r < kTileRows; ++r) {
      const __m512 qv = _mm512_set1_ps(qrows[r][c] * scale);
      acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(qv, k2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(qv, k3, acc[r][3]);
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int t = 0; t < 4; ++t) _mm512_storeu_ps(scores + r * kKeyBlock + 16 * t, acc[r][t]);
}

// acc[r][c0 .. c0 + 16 NV) += sum_j probs[r][j] v[j][...]: NV vectors per row kept in registers
template <int NV>
__attribute__((target("avx512f")))
static void pv_chunk(const float* probs, int cols, const float* v, int64_t d, int64_t c0, float* acc_rows) {
  __mmask16 m[NV];
  for (int t = 0; t < NV; ++t) m[t] = lanes(d - c0 - 16 * t);
  __m512 a[kTileRows][NV];
  for (int r = 0; r < kTileRows; ++r)
    for (int t = 0; t < NV; ++t) a[r][t] = _mm512_maskz_loadu_ps(m[t], acc_rows + r * d + c0 + 16 * t);
  for (int j = 0; j < cols; ++j) {
    const float* vrow = v + j * d + c0;
    __m512 vv[NV];
    for (int t = 0; t < NV; ++t) vv[t] = _mm512_maskz_loadu_ps(m[t], vrow + 16 * t);
    for (int r = 0; r < kTileRows; ++r) {
      const __m512 pr = _mm512_set1_ps(probs[r * kKeyBlock + j]);
      for (int t = 0; t < NV; ++t) a[r][t] = _mm512_fmadd_ps(pr, vv[t], a[r][t]);
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int t = 0; t < NV; ++t) _mm512_mask_storeu_ps(acc_rows + r * d + c0 + 16 * t, m[t], a[r][t]);
}

__attribute__((target("avx512f")))
static void pv_tile(const float* probs, int cols, const float* v, int64_t d, float* acc_rows) {
  for (int64_t c0 = 0; c0 < d; c0 += 64) {
    switch (std::min<int64_t>(4, (d - c0 + 15) / 16)) {  // only the vectors this head dim needs
      case 1: pv_chunk<1>(probs, cols, v, d, c0, acc_rows); break;
      case 2: pv_chunk<2>(probs, cols, v, d, c0, acc_rows); break;
      case 3: pv_chunk<3>(probs, cols, v, d, c0, acc_rows); break;
      default: pv_chunk<4>(probs, cols, v, d, c0, acc_rows); break;
    }
  }
}

// attend_rows with the two products on the micro-kernels; rows past the end reuse the last row's
// data (their results are dropped), so every tile is full.
__attribute__((target("avx512f")))
static void attend_rows_avx512(const float* q, const float* kt, const float* v, float* o, int64_t row0, int64_t row1,
                               int64_t lk, int64_t lk_pad, int64_t d, float scale, float* acc, float* scores) {
  for (int64_t i0 = row0; i0 < row1; i0 += kTileRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kTileRows, row1 - i0));
    const float* qrows[kTileRows];
    float m[kTileRows], l[kTileRows];
    for (int r = 0; r < kTileRows; ++r) {
      qrows[r] = q + (i0 + std::min(r, rows - 1)) * d;
      m[r] = -std::numeric_limits<float>::infinity();
      l[r] = 0.0f;
    }
    std::fill(acc, acc + kTileRows * d, 0.0f);
    for (int64_t j0 = 0; j0 < lk; j0 += kKeyBlock) {
      const int cols = static_cast<int>(std::min<int64_t>(kKeyBlock, lk - j0));
      scores_tile(qrows, kt + j0, lk_pad, d, scale, scores);
      for (int r = 0; r < kTileRows; ++r) {
        online_softmax_row(scores + r * kKeyBlock, cols, m[r], l[r], acc + r * d, d);
      }
      pv_tile(scores, cols, v + j0 * d, d, acc);
    }
    for (int r = 0; r < rows; ++r) {
      const float inv = 1.0f / l[r];
      for (int64_t c = 0; c < d; ++c) o[(i0 + r) * d + c] = acc[r * d + c] * inv;
    }
  }
}
#endif

namespace {

// fp32 copy of a bf16 tensor (bf16 inputs are widened once, O(L d), against the O(Lq Lk d) work).
template <class T>
const float* as_f32(const void* data, int64_t n, std::vector<float>& storage) {
  if constexpr (std::is_same_v<T, float>) {
    return static_cast<const float*>(data);
  } else {
    storage.resize(static_cast<size_t>(n));
    const T* src = static_cast<const T*>(data);
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) storage[i] = to_float(src[i]);
    return storage.data();
  }
}

template <class T>
void attention_impl(const AttentionArgs& a) {
  constexpr bool kWiden = !std::is_same_v<T, float>;  // bf16 storage: rows widened to fp32 per task
  const int64_t bh = a.batch_heads, lq = a.q_len, lk = a.k_len, d = a.head_dim;
  std::vector<float> v_storage;
  const float* v = as_f32<T>(a.v, bh * lk * d, v_storage);
  const T* q = static_cast<const T*>(a.q);
  T* out = static_cast<T*>(a.out);
  const T* k = static_cast<const T*>(a.k);
  // K transposed once per (batch, head): the score loop then reads keys contiguously
  const int64_t lk_pad = (lk + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  std::vector<float> kt(static_cast<size_t>(bh * lk_pad * d), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < bh; ++h) {
    const T* kh = k + h * lk * d;
    float* t = kt.data() + h * lk_pad * d;
    for (int64_t j = 0; j < lk; ++j)
      for (int64_t c = 0; c < d; ++c) t[c * lk_pad + j] = to_float(kh[j * d + c]);
  }
  const int64_t blocks = (lq + kQueryBlock - 1) / kQueryBlock;
#ifdef SDRT_HAVE_AVX512_PATH
  const bool use_avx512 = avx512_enabled();
#endif
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(kRowBlock * d));
    std::vector<float> scores(kRowBlock * kKeyBlock);
    std::vector<float> q_rows(kWiden ? kQueryBlock * d : 0), out_rows(kWiden ? kQueryBlock * d : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < bh * blocks; ++task) {
      const int64_t h = task / blocks, b = task % blocks;
      int64_t row0 = b * kQueryBlock, row1 = std::min(lq, row0 + kQueryBlock);
      const float* qh;
      float* oh;
      if constexpr (kWiden) {  // this task's query rows in fp32, its output rows in an fp32 buffer
        const T* src = q + (h * lq + row0) * d;
        for (int64_t i = 0; i < (row1 - row0) * d; ++i) q_rows[i] = to_float(src[i]);
        qh = q_rows.data();
        oh = out_rows.data();
        row1 -= row0;
        row0 = 0;
      } else {
        qh = q + h * lq * d;
        oh = out + h * lq * d;
      }
      const float* kth = kt.data() + h * lk_pad * d;
      const float* vh = v + h * lk * d;
#ifdef SDRT_HAVE_AVX512_PATH
      if (use_avx512) {
        attend_rows_avx512(qh, kth, vh, oh, row0, row1, lk, lk_pad, d, a.scale, acc.data(), scores.data());
      } else
#endif
      {
        attend_rows(qh, kth, vh, oh, row0, row1, lk, lk_pad, d, a.scale, acc.data(), scores.data());
      }
      if constexpr (kWiden) {
        T* dst = out + (h * lq + b * kQueryBlock) * d;
        for (int64_t i = 0; i < row1 * d; ++i) dst[i] = from_float<T>(out_rows[i]);
      }
    }
  }
}

}  // namespace

// The one place a storage dtype picks the CPU attention instantiation.
void attention(DType dtype, const AttentionArgs& args) {
  switch (dtype) {
    case DType::kFloat32: attention_impl<float>(args); return;
    case DType::kBFloat16: attention_impl<bfloat16_t>(args); return;
    default: throw std::invalid_argument(std::string("CPU attention: unsupported dtype ") + dtype_name(dtype));
  }
}

}  // namespace sdrt::cpu
