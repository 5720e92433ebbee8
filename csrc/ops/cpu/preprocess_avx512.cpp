// AVX-512 kernels of the CPU preprocess op: the horizontal-first path with float32 output, and frames that
// are not resampled at all. Same arithmetic as resample_pixel_2d (preprocess_math.h), in the same order:
// every lane sums its taps from the first as separate multiplies and adds (no FMA: this file too is compiled
// with -ffp-contract=off), so the results equal the pointwise (CUDA-arithmetic) path's bit for bit.
//
// Horizontal-first band of one frame, 16 input rows at a time:
//  1. the 16 rows' bytes over the input columns read are transposed (16x16 byte transposes, four per
//     instruction, by the unpack ladder) and widened to floats: T holds, for every input byte (pixel and
//     channel), one 16-float vector of that byte in the 16 rows;
//  2. output columns in groups of four, all running the group's largest tap count (zero weights past a
//     column's own): 12 accumulators of 16 rows, each tap one broadcast weight times one vector of T. A group
//     runs as soon as the bytes it reads are transposed (64 bytes of each row at a time), so T is read back
//     from L1; the next 16 rows are prefetched into L2 meanwhile;
//  3. the sums are clip-rounded to Pillow's uint8 (unsigned-saturating narrow), transposed back by the same
//     byte ladder into rows, widened and stored in a ring of float rows ([channel][column]);
//  4. the vertical pass of each output row runs over the ring rows it reads, 16 columns a vector, and
//     normalises into the output row (non-temporal stores for large outputs).
// Only the C headers and <immintrin.h> are included: nothing compiled here with AVX-512 can be shared with
// code that runs without it (preprocess_avx512.h).
#include "preprocess_avx512.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__)
#include <immintrin.h>
#include <string.h>
#define VLM_HAVE_AVX512 1
#endif

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace vlmreward {
namespace avx512 {

#if defined(VLM_HAVE_AVX512)
namespace {

#define VLM_INLINE inline __attribute__((always_inline))

VLM_INLINE int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
VLM_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
VLM_INLINE int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Four 16x16 byte transposes, one per 128-bit lane: x[r] lane L byte b -> x[b] lane L byte r.
VLM_INLINE void transpose_bytes(__m512i x[16]) {
  __m512i a[16], b[16], c[16];
  for (int p = 0; p < 8; ++p) {  // a[2p + h]: rows 2p, 2p+1 as 16-bit pairs, bytes 8h..8h+7
    a[2 * p] = _mm512_unpacklo_epi8(x[2 * p], x[2 * p + 1]);
    a[2 * p + 1] = _mm512_unpackhi_epi8(x[2 * p], x[2 * p + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // b[4q + m]: rows 4q..4q+3 as 32-bit units, bytes 4m..4m+3
    for (int h = 0; h < 2; ++h) {
      b[4 * q + 2 * h] = _mm512_unpacklo_epi16(a[4 * q + h], a[4 * q + 2 + h]);
      b[4 * q + 2 * h + 1] = _mm512_unpackhi_epi16(a[4 * q + h], a[4 * q + 2 + h]);
    }
  }
  for (int s = 0; s < 2; ++s) {  // c[8s + n]: rows 8s..8s+7 as 64-bit units, bytes 2n, 2n+1
    for (int m = 0; m < 4; ++m) {
      c[8 * s + 2 * m] = _mm512_unpacklo_epi32(b[8 * s + m], b[8 * s + 4 + m]);
      c[8 * s + 2 * m + 1] = _mm512_unpackhi_epi32(b[8 * s + m], b[8 * s + 4 + m]);
    }
  }
  for (int n = 0; n < 8; ++n) {  // x[b]: rows 0..15 of byte b
    x[2 * n] = _mm512_unpacklo_epi64(c[n], c[8 + n]);
    x[2 * n + 1] = _mm512_unpackhi_epi64(c[n], c[8 + n]);
  }
}

// The 16 bytes of each 128-bit lane L of v as 16 floats, stored at dL.
VLM_INLINE void widen_store(__m512i v, float* d0, float* d1, float* d2, float* d3) {
  _mm512_storeu_ps(d0, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(v))));
  _mm512_storeu_ps(d1, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 1))));
  _mm512_storeu_ps(d2, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 2))));
  _mm512_storeu_ps(d3, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 3))));
}

// clip_round() of 16 sums as bytes: rounding first and clipping the integers gives the same values (a sum
// below -0.5 truncates to a negative, clipped to 0; above 254.5 the unsigned-saturating narrow gives 255).
VLM_INLINE __m128i clip_round_bytes(__m512 acc) {
  const __m512i i = _mm512_max_epi32(_mm512_cvttps_epi32(_mm512_add_ps(acc, _mm512_set1_ps(0.5f))),
                                     _mm512_setzero_si512());
  return _mm512_cvtusepi32_epi8(i);
}

// normalise_pixel() of 16 sums.
VLM_INLINE __m512 normalise(__m512 acc, __m512 scale, __m512 shift) {
  __m512i i = _mm512_cvttps_epi32(_mm512_add_ps(acc, _mm512_set1_ps(0.5f)));
  i = _mm512_min_epi32(_mm512_max_epi32(i, _mm512_setzero_si512()), _mm512_set1_epi32(255));
  return _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i), scale), shift);
}

VLM_INLINE __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

void fill_row(float* dst, int64_t from, int64_t to, float value) {
  const __m512 v = _mm512_set1_ps(value);
  for (int64_t j = from; j < to; j += 16) _mm512_mask_storeu_ps(dst + j, lanes(to - j), v);
}

struct Layout {
  int64_t K64, S64, R, t_floats, ring_floats, hb_bytes, taps;
};
Layout layout(const HorizontalFirst& a, int max_taps) {
  Layout l;
  l.K64 = round_up(3 * a.nx, 64);
  l.S64 = round_up(a.size, 64);
  // Refilling 16 rows while an output row still reads count rows needs count + 15 ring rows.
  l.R = round_up(max_taps + 15, 16);
  l.t_floats = round_up(16 * l.K64 + 48 * int64_t(a.gtaps), 16);  // taps past nx read zeros
  l.ring_floats = l.R * 3 * l.S64;
  l.hb_bytes = 3 * l.S64 * 16;
  l.taps = max_taps;
  return l;
}

// Horizontal pass of 16 input rows (rows[r] at input column x_lo) into ring rows ring_rows[0..16).
// `next` (or null): the 16 rows of the next call, prefetched into L2 while these are transposed (16 short
// streams a call are more than the hardware prefetchers follow in time).
void horizontal16(const HorizontalFirst& a, const Layout& l, const uint8_t* const* rows, const uint8_t* const* next,
                  float* T, uint8_t* hb, float* ring_rows) {
  const int64_t K = 3 * a.nx, NB = l.S64 / 64;
  const int64_t g_lo = a.j_lo / 4, g_hi = (a.j_hi + 3) / 4;
  int64_t g = g_lo;
  // Each group's taps are resampled as soon as the bytes they read are transposed, while T's last chunks
  // are still in L1 (starts never go back).
  auto mac = [&](int64_t g) __attribute__((always_inline)) {  // the taps of group g, into hb
    const int n = a.gcount[g];
    const int32_t* off = a.goff + 4 * g;
    const float* w = a.gw + g * int64_t(a.gtaps) * 4;
    const float *t0 = T + off[0], *t1 = T + off[1], *t2 = T + off[2], *t3 = T + off[3];
    __m512 acc[4][3];
    if (n == 0) {
      for (auto& al : acc)
        for (auto& v : al) v = _mm512_setzero_ps();
    } else {
      {
        const __m512 w0 = _mm512_set1_ps(w[0]), w1 = _mm512_set1_ps(w[1]), w2 = _mm512_set1_ps(w[2]),
                     w3 = _mm512_set1_ps(w[3]);
        for (int c = 0; c < 3; ++c) {  // 0 + w0 * p0 == w0 * p0 up to the sign of a zero, which clipping drops
          acc[0][c] = _mm512_mul_ps(w0, _mm512_loadu_ps(t0 + 16 * c));
          acc[1][c] = _mm512_mul_ps(w1, _mm512_loadu_ps(t1 + 16 * c));
          acc[2][c] = _mm512_mul_ps(w2, _mm512_loadu_ps(t2 + 16 * c));
          acc[3][c] = _mm512_mul_ps(w3, _mm512_loadu_ps(t3 + 16 * c));
        }
      }
      for (int k = 1; k < n; ++k) {
        const float* wk = w + 4 * k;
        const __m512 w0 = _mm512_set1_ps(wk[0]), w1 = _mm512_set1_ps(wk[1]), w2 = _mm512_set1_ps(wk[2]),
                     w3 = _mm512_set1_ps(wk[3]);
        const int64_t o = 48 * int64_t(k);
        for (int c = 0; c < 3; ++c) {
          acc[0][c] = _mm512_add_ps(acc[0][c], _mm512_mul_ps(w0, _mm512_loadu_ps(t0 + o + 16 * c)));
          acc[1][c] = _mm512_add_ps(acc[1][c], _mm512_mul_ps(w1, _mm512_loadu_ps(t1 + o + 16 * c)));
          acc[2][c] = _mm512_add_ps(acc[2][c], _mm512_mul_ps(w2, _mm512_loadu_ps(t2 + o + 16 * c)));
          acc[3][c] = _mm512_add_ps(acc[3][c], _mm512_mul_ps(w3, _mm512_loadu_ps(t3 + o + 16 * c)));
        }
      }
    }
    for (int li = 0; li < 4; ++li) {
      const int64_t j = 4 * g + li;
      // hb[c][j / 64][j % 16][(j % 64) / 16]: 16 bytes (rows) per column, so that one 64-byte load holds
      // columns j, j + 16, j + 32, j + 48 of a 64-column block, a transposable row of the ladder.
      uint8_t* dst = hb + ((j / 64) * 16 + j % 16) * 64 + ((j % 64) / 16) * 16;
      for (int c = 0; c < 3; ++c)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c * NB * 1024), clip_round_bytes(acc[li][c]));
    }
  };
  auto ready = [&](int64_t g, int64_t bytes) {  // group g reads only T entries below `bytes`
    const int32_t* off = a.goff + 4 * g;
    int32_t hi = off[0];
    for (int li = 1; li < 4; ++li) hi = off[li] > hi ? off[li] : hi;
    return 3 * (int64_t(hi) / 48 + a.gcount[g]) <= bytes;
  };
  for (int64_t k0 = 0; k0 < K; k0 += 64) {
    const int64_t rem = K - k0;
    const __mmask64 m = rem >= 64 ? ~__mmask64(0) : (__mmask64(1) << rem) - 1;
    __m512i x[16];
    for (int r = 0; r < 16; ++r) x[r] = _mm512_maskz_loadu_epi8(m, rows[r] + k0);
    if (next) {
      for (int r = 0; r < 16; ++r) _mm_prefetch(reinterpret_cast<const char*>(next[r] + k0), _MM_HINT_T1);
    }
    transpose_bytes(x);
    float* t = T + 16 * k0;
    for (int b = 0; b < 16; ++b)
      widen_store(x[b], t + 16 * b, t + 16 * (16 + b), t + 16 * (32 + b), t + 16 * (48 + b));
    for (; g < g_hi && ready(g, k0 + 64); ++g) mac(g);
  }
  for (; g < g_hi; ++g) mac(g);  // taps past the last column read T's zero tail
  const int64_t row_floats = 3 * l.S64;
  for (int c = 0; c < 3; ++c) {
    for (int64_t blk = 0; blk < NB; ++blk) {
      __m512i x[16];
      const uint8_t* src = hb + (c * NB + blk) * 1024;
      for (int i = 0; i < 16; ++i) x[i] = _mm512_loadu_si512(src + 64 * i);
      transpose_bytes(x);  // x[r] lane L: row r, columns 64 blk + 16 L + 0..15
      for (int r = 0; r < 16; ++r) {
        float* d = ring_rows + r * row_floats + c * l.S64 + 64 * blk;
        widen_store(x[r], d, d + 16, d + 32, d + 48);
      }
    }
  }
}

// NV vectors of one output row and channel: dst[0 .. 16 NV) (clipped to S) from the ring rows src[t].
// kStream: dst is 64-byte aligned and S a multiple of 16: non-temporal stores (no read for ownership).
template <int NV, bool kStream>
VLM_INLINE void vertical_block(const float* const* src, const float* w, int n, int64_t j, int64_t S, __m512 scale,
                               __m512 shift, float* dst) {
  __m512 acc[NV];
  const __m512 w0 = _mm512_set1_ps(w[0]);
  for (int q = 0; q < NV; ++q) acc[q] = _mm512_mul_ps(w0, _mm512_loadu_ps(src[0] + j + 16 * q));
  for (int t = 1; t < n; ++t) {
    const __m512 wt = _mm512_set1_ps(w[t]);
    for (int q = 0; q < NV; ++q) acc[q] = _mm512_add_ps(acc[q], _mm512_mul_ps(wt, _mm512_loadu_ps(src[t] + j + 16 * q)));
  }
  for (int q = 0; q < NV; ++q) {
    const int64_t jq = j + 16 * q;
    if (jq >= S) break;
    if constexpr (kStream) _mm512_stream_ps(dst + jq, normalise(acc[q], scale, shift));
    else _mm512_mask_storeu_ps(dst + jq, lanes(S - jq), normalise(acc[q], scale, shift));
  }
}

template <bool kStream>
VLM_INLINE void vertical_row(const float* const* src, const float* w, int n, int64_t S, __m512 scale, __m512 shift,
                             float* dst) {
  int64_t j = 0;
  for (; j + 64 <= S; j += 64) vertical_block<4, kStream>(src, w, n, j, S, scale, shift, dst);
  switch ((S - j + 15) / 16) {  // the last 1..63 columns: 1 to 4 vectors (4 when 49..63 are left)
    case 4: vertical_block<4, kStream>(src, w, n, j, S, scale, shift, dst); break;
    case 3: vertical_block<3, kStream>(src, w, n, j, S, scale, shift, dst); break;
    case 2: vertical_block<2, kStream>(src, w, n, j, S, scale, shift, dst); break;
    case 1: vertical_block<1, kStream>(src, w, n, j, S, scale, shift, dst); break;
    default: break;
  }
}

}  // namespace

bool available() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

size_t horizontal_first_scratch(const HorizontalFirst& a, int max_taps) {
  const Layout l = layout(a, max_taps);
  return size_t(4 * (l.t_floats + l.ring_floats) + l.hb_bytes) + sizeof(const float*) * size_t(max64(1, l.taps));
}

void horizontal_first_band(const HorizontalFirst& a, int64_t r0, int64_t r1, int max_taps, void* scratch) {
  const Layout l = layout(a, max_taps);
  const int64_t S = a.size, W = a.width, row_floats = 3 * l.S64;
  float* T = static_cast<float*>(scratch);
  float* ring = T + l.t_floats;
  uint8_t* hb = reinterpret_cast<uint8_t*>(ring + l.ring_floats);
  const float** src = reinterpret_cast<const float**>(hb + l.hb_bytes);  // the ring rows of an output row's taps
  memset(T + 16 * l.K64, 0, size_t(4 * (l.t_floats - 16 * l.K64)));
  memset(hb, 0, size_t(l.hb_bytes));  // columns no group writes (padding) stay 0
  int64_t ylo = INT64_MAX, yhi = 0;
  for (int64_t i = r0; i < r1; ++i) {
    if (a.row_count[i] == 0) continue;
    ylo = min64(ylo, a.row_start[i]);
    yhi = max64(yhi, int64_t(a.row_start[i]) + a.row_count[i]);
  }
  const uint8_t* rows[32];  // this call's 16 rows, then the next call's
  const bool stream = a.stream && S % 16 == 0 && reinterpret_cast<uintptr_t>(a.out) % 64 == 0;
  int64_t produced = ylo;  // next input row to resample horizontally
  for (int64_t i = r0; i < r1; ++i) {
    const int n = a.row_count[i];
    const int64_t y0 = a.row_start[i];
    if (n == 0) {  // a padded row
      for (int c = 0; c < 3; ++c) fill_row(a.out + (c * S + i) * S, 0, S, a.shift[c]);
      continue;
    }
    for (; produced < y0 + n; produced += 16) {
      for (int r = 0; r < 32; ++r)  // rows past the band repeat its last row (their results are never read)
        rows[r] = a.frame + (min64(produced + r, yhi - 1) * W + a.x_lo) * 3;
      horizontal16(a, l, rows, produced + 16 < yhi ? rows + 16 : nullptr, T, hb,
                   ring + (produced - ylo) % l.R * row_floats);
    }
    const float* w = a.row_weights + i * int64_t(a.row_taps);
    for (int c = 0; c < 3; ++c) {
      float* dst = a.out + (c * S + i) * S;
      for (int t = 0; t < n; ++t) src[t] = ring + ((y0 + t - ylo) % l.R) * row_floats + c * l.S64;
      const __m512 scale = _mm512_set1_ps(a.scale[c]), shift = _mm512_set1_ps(a.shift[c]);
      if (stream) vertical_row<true>(src, w, n, S, scale, shift, dst);
      else vertical_row<false>(src, w, n, S, scale, shift, dst);
      fill_row(dst, 0, a.j_lo, a.shift[c]);
      fill_row(dst, a.j_hi, S, a.shift[c]);
    }
  }
  if (stream) _mm_sfence();  // order the non-temporal stores before whatever reads the output
}

void identity_band(const uint8_t* frame, int64_t width, int64_t size, const int32_t* row_start,
                   const int32_t* row_count, int64_t x0, int64_t j_lo, int64_t j_hi, const float* scale,
                   const float* shift, float* out, int64_t r0, int64_t r1, bool stream) {
  const int64_t S = size;
  stream = stream && j_lo == 0 && j_hi == S && S % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 64 == 0;
  // Lane l of channel c is byte 3l + c of 16 pixels: from the first two 16-float quarters, then the third.
  alignas(64) int32_t first[3][16], second[3][16];
  for (int c = 0; c < 3; ++c) {
    for (int l = 0; l < 16; ++l) {
      const int k = 3 * l + c;
      first[c][l] = k < 32 ? k : 0;
      second[c][l] = k < 32 ? l : 16 + (k - 32);
    }
  }
  __m512i i1[3], i2[3];
  __m512 sc[3], sh[3];
  for (int c = 0; c < 3; ++c) {
    i1[c] = _mm512_load_si512(first[c]);
    i2[c] = _mm512_load_si512(second[c]);
    sc[c] = _mm512_set1_ps(scale[c]);
    sh[c] = _mm512_set1_ps(shift[c]);
  }
  for (int64_t i = r0; i < r1; ++i) {
    float* dst[3] = {out + i * S, out + (S + i) * S, out + (2 * S + i) * S};
    if (row_count[i] == 0) {
      for (int c = 0; c < 3; ++c) fill_row(dst[c], 0, S, shift[c]);
      continue;
    }
    const uint8_t* src = frame + (int64_t(row_start[i]) * width + x0) * 3;
    for (int64_t j = j_lo; j < j_hi; j += 16) {
      const int64_t m = min64(16, j_hi - j);
      const __mmask64 mask = m >= 16 ? __mmask64(0xFFFFFFFFFFFFull) : (__mmask64(1) << (3 * m)) - 1;
      const __m512i v = _mm512_maskz_loadu_epi8(mask, src + 3 * (j - j_lo));
      const __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(v)));
      const __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 1)));
      const __m512 f2 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 2)));
      for (int c = 0; c < 3; ++c) {
        // one tap of weight 1 on each axis: 0 + 1 * p = p, clip_round(p) = p, then normalise_pixel()
        const __m512 p = _mm512_permutex2var_ps(_mm512_permutex2var_ps(f0, i1[c], f1), i2[c], f2);
        const __m512 v = _mm512_add_ps(_mm512_mul_ps(p, sc[c]), sh[c]);
        if (stream) _mm512_stream_ps(dst[c] + j, v);
        else _mm512_mask_storeu_ps(dst[c] + j, lanes(m), v);
      }
    }
    for (int c = 0; c < 3; ++c) {
      fill_row(dst[c], 0, j_lo, shift[c]);
      fill_row(dst[c], j_hi, S, shift[c]);
    }
  }
  if (stream) _mm_sfence();
}

#else  // not built for AVX-512: never called

bool available() { return false; }
size_t horizontal_first_scratch(const HorizontalFirst&, int) { return 0; }
void horizontal_first_band(const HorizontalFirst&, int64_t, int64_t, int, void*) {}
void identity_band(const uint8_t*, int64_t, int64_t, const int32_t*, const int32_t*, int64_t, int64_t, int64_t,
                   const float*, const float*, float*, int64_t, int64_t, bool) {}

#endif

}  // namespace avx512
}  // namespace vlmreward
