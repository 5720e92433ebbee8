// CPU kernels of the preprocess op.
//
// Fast path, in Pillow's order. A task is a band of output rows of one frame. The horizontal pass runs on
// 8 input rows at once: the rows are widened to floats and transposed in 8x8 blocks, so that one 8-float
// vector holds one channel of one input column in 8 rows; each output column is then one broadcast weight
// times a full vector per tap and channel (the taps of a column are the same in every row). The sums are
// clipped and rounded as Pillow's uint8 intermediate would be, transposed back and stored as three float
// planes of width S per input row, in a ring of a few rows: the vertical pass of output row i consumes rows
// [start_i, start_i + count_i) and the ring is refilled 8 rows at a time as i advances (starts never go
// back), so the intermediate stays in L1/L2 and no full-size float copy of a frame is ever made. The
// vertical pass keeps 8 output columns in a register across its taps and normalises them on the way out.
// Bands spread small batches over all threads; large batches get one band per frame.
//
// Vectors are GCC/Clang vector extensions: 8 floats, one AVX2 register, in the x86-64-v3 build of the hot
// loops; 4 floats (SSE, NEON) in the baseline build, which is also what other architectures compile.
#include "../preprocess.h"

#include "preprocess_avx512.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

// No FMA contraction: each product and sum is rounded as in resample_pixel_2d, so the fast path gives the
// pointwise (CUDA-arithmetic) path's results bit for bit. x86 cores issue the multiply and the add on separate
// pipes, so the throughput is that of FMA; the loops have enough independent sums to hide the latency.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wpsabi"  // 8-float vectors only cross always_inline helpers: no ABI in play
#endif

namespace vlmreward {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

// The hot loops are compiled twice, for AVX2 (x86-64-v3) and for the baseline, and picked once at run time
// (kernels()). The baseline works on 16-byte halves: GCC would expand 8-float shuffles and scalar broadcasts
// for 16-byte registers lane by lane, through memory.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VLM_X86_DISPATCH 1
#define VLM_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif
#define VLM_INLINE inline __attribute__((always_inline))
#if defined(__clang__)
#define VLM_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define VLM_SHUFFLE4(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define VLM_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, v8i{__VA_ARGS__})
#define VLM_SHUFFLE4(a, b, ...) __builtin_shuffle(a, b, v4i{__VA_ARGS__})
#endif

VLM_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
VLM_INLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

// m[k][r] -> m[r][k] (AVX: unpack, shuffle, 128-bit permute, 24 instructions).
template <bool kAvx2>
VLM_INLINE void transpose8(v8f m[8]) {
  if constexpr (!kAvx2) {  // four 4x4 transposes of 16-byte halves (SSE unpack and movlhps/movhlps)
    v4f a[8][2], b[8][2];
    std::memcpy(a, m, sizeof a);
    for (int rb = 0; rb < 2; ++rb) {
      for (int cb = 0; cb < 2; ++cb) {
        const v4f* r = &a[4 * rb][cb];  // rows 4rb.., columns 4cb..: r[0], r[2], r[4], r[6]
        const v4f t0 = VLM_SHUFFLE4(r[0], r[2], 0, 4, 1, 5), t1 = VLM_SHUFFLE4(r[0], r[2], 2, 6, 3, 7);
        const v4f t2 = VLM_SHUFFLE4(r[4], r[6], 0, 4, 1, 5), t3 = VLM_SHUFFLE4(r[4], r[6], 2, 6, 3, 7);
        b[4 * cb][rb] = VLM_SHUFFLE4(t0, t2, 0, 1, 4, 5);
        b[4 * cb + 1][rb] = VLM_SHUFFLE4(t0, t2, 2, 3, 6, 7);
        b[4 * cb + 2][rb] = VLM_SHUFFLE4(t1, t3, 0, 1, 4, 5);
        b[4 * cb + 3][rb] = VLM_SHUFFLE4(t1, t3, 2, 3, 6, 7);
      }
    }
    std::memcpy(m, b, sizeof b);
    return;
  }
  v8f t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = VLM_SHUFFLE(m[i], m[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = VLM_SHUFFLE(m[i], m[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    for (int h = 0; h < 2; ++h) {
      s[i + 2 * h] = VLM_SHUFFLE(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      s[i + 2 * h + 1] = VLM_SHUFFLE(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  // s[0..3] hold columns (0,4), (1,5), (2,6), (3,7) of rows 0-3; s[4..7] the same of rows 4-7.
  for (int i = 0; i < 4; ++i) {
    m[i] = VLM_SHUFFLE(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    m[i + 4] = VLM_SHUFFLE(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// clip_round() on 8 values: Pillow's uint8 store of a resampled value. Rounding first and clipping the
// integers gives the same results (v + 0.5 < 0 truncates to <= 0, > 255.5 to >= 255) in fewer instructions;
// resampled values are bounded by ~2x the pixel range, far from int overflow.
template <bool kAvx2>
VLM_INLINE v8f clip_round8(v8f v) {
  if constexpr (!kAvx2) {  // the same on 16-byte halves, which SSE compares and selects natively
    v4f h[2];
    std::memcpy(h, &v, sizeof h);
    for (v4f& x : h) {
      v4i i = __builtin_convertvector(x + 0.5f, v4i);
      i = i > 0 ? i : 0;
      i = i < 255 ? i : 255;
      x = __builtin_convertvector(i, v4f);
    }
    std::memcpy(&v, h, sizeof h);
    return v;
  }
  v8i i = __builtin_convertvector(v + 0.5f, v8i);
  i = i > 0 ? i : 0;
  i = i < 255 ? i : 255;
  return __builtin_convertvector(i, v8f);
}

// Horizontal pass of 8 input rows (`rows[r]` points at pixel x_lo of row r; nx pixels are read) into
// out[r * out_stride + c * S8 + j] for output columns j < S8 (S rounded up to 8; the extra columns and padded
// ones get 0). `cols` holds the taps of every output column, all within [x_lo, x_lo + nx). T is scratch of
// 8 * (3 * nx rounded up to 8) floats.
template <bool kAvx2>
VLM_INLINE void horizontal_rows8(const uint8_t* const* rows, int64_t x_lo, int64_t nx, const AxisPlan& cols,
                                 int64_t S, int64_t S8, float* T, float* out, int64_t out_stride) {
  const int64_t K = 3 * nx;
  // T[8 * k + r] = row r, byte k: 64 bytes of each row widened to floats (a loop that vectorises), then
  // transposed in 8x8 blocks.
  constexpr int64_t kChunk = 64;
  alignas(32) float wide[8][kChunk];
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t len = std::min(kChunk, K - k0);
    for (int r = 0; r < 8; ++r) {
      const uint8_t* src = rows[r] + k0;
      uint8_t tail[kChunk] = {};
      if (len < kChunk) src = static_cast<const uint8_t*>(std::memcpy(tail, src, size_t(len)));
      for (int64_t k = 0; k < kChunk; ++k) wide[r][k] = static_cast<float>(src[k]);
    }
    for (int64_t q0 = 0; q0 < len; q0 += 8) {
      v8f m[8];
      for (int r = 0; r < 8; ++r) m[r] = load8(&wide[r][q0]);
      transpose8<kAvx2>(m);
      for (int q = 0; q < 8; ++q) store8(T + 8 * (k0 + q0 + q), m[q]);
    }
  }
  for (int64_t j0 = 0; j0 < S8; j0 += 8) {
    v8f acc[3][8];
    for (int jj = 0; jj < 8; ++jj) {
      const int64_t j = j0 + jj;
      // Baseline: 16-byte vectors, since GCC builds an 8-float broadcast of a scalar through memory.
      typedef std::conditional_t<kAvx2, v8f, v4f> V;
      constexpr int kLanes = sizeof(V) / sizeof(float);
      V a[24 / kLanes] = {};
      const int n = j < S ? cols.count[j] : 0;
      if (n > 0) {
        const float* w = &cols.weights[size_t(j) * cols.taps];
        const float* p = T + 24 * (int64_t(cols.start[j]) - x_lo);
        for (int k = 0; k < n; ++k, p += 24) {
          const V wk = V{} + w[k];
          for (int q = 0; q < 24 / kLanes; ++q) {
            V v;
            std::memcpy(&v, p + q * kLanes, sizeof v);
            a[q] += wk * v;
          }
        }
      }
      for (int c = 0; c < 3; ++c) {
        v8f v;
        std::memcpy(&v, &a[c * 8 / kLanes], sizeof v);
        acc[c][jj] = clip_round8<kAvx2>(v);
      }
    }
    for (int c = 0; c < 3; ++c) {
      transpose8<kAvx2>(acc[c]);
      for (int r = 0; r < 8; ++r) store8(out + r * out_stride + c * S8 + j0, acc[c][r]);
    }
  }
}

// dst[j] = normalise_pixel(sum_t w[t] * src[t][j]) for j < S8: the vertical pass of one output row and channel.
template <bool kAvx2>
VLM_INLINE void vertical_row(const float* const* src, const float* w, int taps, int64_t S8, float scale, float shift,
                             float* dst) {
  typedef std::conditional_t<kAvx2, v8f, v4f> V;  // as in horizontal_rows8
  typedef std::conditional_t<kAvx2, v8i, v4i> I;
  for (int64_t j = 0; j < S8; j += sizeof(V) / sizeof(float)) {
    V acc = {}, v;
    for (int t = 0; t < taps; ++t) {
      std::memcpy(&v, src[t] + j, sizeof v);
      acc += (V{} + w[t]) * v;
    }
    I i = __builtin_convertvector(acc + 0.5f, I);  // clip_round8()
    i = i > 0 ? i : 0;
    i = i < 255 ? i : 255;
    v = __builtin_convertvector(i, V) * scale + shift;
    std::memcpy(dst + j, &v, sizeof v);
  }
}

// The two kernels, per instruction set.
struct Kernels {
  void (*horizontal)(const uint8_t* const*, int64_t, int64_t, const AxisPlan&, int64_t, int64_t, float*, float*,
                     int64_t);
  void (*vertical)(const float* const*, const float*, int, int64_t, float, float, float*);
};
#if defined(VLM_X86_DISPATCH)
VLM_AVX2 void horizontal_avx2(const uint8_t* const* rows, int64_t x_lo, int64_t nx, const AxisPlan& cols, int64_t S,
                              int64_t S8, float* T, float* out, int64_t out_stride) {
  horizontal_rows8<true>(rows, x_lo, nx, cols, S, S8, T, out, out_stride);
}
VLM_AVX2 void vertical_avx2(const float* const* src, const float* w, int taps, int64_t S8, float scale, float shift,
                            float* dst) {
  vertical_row<true>(src, w, taps, S8, scale, shift, dst);
}
#endif
void horizontal_base(const uint8_t* const* rows, int64_t x_lo, int64_t nx, const AxisPlan& cols, int64_t S,
                     int64_t S8, float* T, float* out, int64_t out_stride) {
  horizontal_rows8<false>(rows, x_lo, nx, cols, S, S8, T, out, out_stride);
}
void vertical_base(const float* const* src, const float* w, int taps, int64_t S8, float scale, float shift,
                   float* dst) {
  vertical_row<false>(src, w, taps, S8, scale, shift, dst);
}

// The widest instruction set of this CPU, capped by VLMREWARD_PREPROCESS_ISA=avx2 or baseline if set (read
// once; tests use it to run the narrower kernels on a wider CPU).
enum class Isa { kBaseline, kAvx2, kAvx512 };
Isa isa() {
  static const Isa v = [] {
    const char* cap = std::getenv("VLMREWARD_PREPROCESS_ISA");
    const std::string_view c = cap ? cap : "";
    Isa best = Isa::kBaseline;
#if defined(VLM_X86_DISPATCH)
    if (__builtin_cpu_supports("x86-64-v3")) best = Isa::kAvx2;
#endif
    if (best == Isa::kAvx2 && avx512::available()) best = Isa::kAvx512;
    if (c == "baseline") return Isa::kBaseline;
    if (c == "avx2") return std::min(best, Isa::kAvx2);
    return best;
  }();
  return v;
}

const Kernels& kernels() {
  static const Kernels k = [] {
#if defined(VLM_X86_DISPATCH)
    if (isa() >= Isa::kAvx2)
      return Kernels{horizontal_avx2, vertical_avx2};
#endif
    return Kernels{horizontal_base, vertical_base};
  }();
  return k;
}

struct Scratch {
  std::vector<float> T, ring, row, acc;
  std::vector<uint8_t> mid;
  std::vector<const float*> taps;
};

struct Plan {
  PreprocessGeometry g;
  AxisPlan rows, cols;
};

// plan_axis() with a small per-thread cache: the taps (~10k double operations for 224 outputs of a 1.8x
// downscale) cost as much as a frame's resampling at B=1, and a reward loop calls with one geometry.
AxisPlan cached_axis_plan(int interpolation, const AxisGeometry& g, int64_t canvas) {
  struct Entry {
    int interpolation = -1, in_size = 0, taps = 0;
    int64_t resized = 0, offset = 0, canvas = 0;
    AxisPlan plan;
  };
  thread_local Entry cache[4];
  thread_local int next = 0;
  for (const Entry& e : cache) {
    if (e.interpolation == interpolation && e.in_size == g.in_size && e.taps == g.taps && e.resized == g.resized &&
        e.offset == g.offset && e.canvas == canvas)
      return e.plan;
  }
  AxisPlan plan = plan_axis(interpolation, g, canvas);
  if (plan.weights.size() <= (size_t(1) << 18)) {  // cache at most 1 MiB of weights an entry
    Entry& e = cache[next];
    next = (next + 1) % 4;
    e.interpolation = -1;  // invalid while the copy below may throw
    e.plan = plan;
    e.interpolation = interpolation;
    e.in_size = g.in_size;
    e.taps = g.taps;
    e.resized = g.resized;
    e.offset = g.offset;
    e.canvas = canvas;
  }
  return plan;
}

// Input columns [x_lo, x_lo + nx) any output column reads, and the valid (non-padded) output columns
// [j_lo, j_hi): one contiguous run.
struct ColumnSpan {
  int64_t x_lo, nx, j_lo, j_hi;
};
ColumnSpan column_span(const Plan& p) {
  const int64_t S = p.g.size;
  int64_t x_lo = p.g.width, x_hi = 0, j_lo = S, j_hi = 0;
  for (int64_t j = 0; j < S; ++j) {
    if (p.cols.count[j] == 0) continue;
    x_lo = std::min<int64_t>(x_lo, p.cols.start[j]);
    x_hi = std::max<int64_t>(x_hi, p.cols.start[j] + p.cols.count[j]);
    j_lo = std::min(j_lo, j);
    j_hi = j + 1;
  }
  return {x_lo, std::max<int64_t>(0, x_hi - x_lo), j_lo, std::max(j_lo, j_hi)};
}

// One output row and channel from its vertical-pass sums v (clip-rounded there), normalised, padded columns
// filled.
template <typename out_t>
VLM_INLINE void store_row(const float* v, const ColumnSpan& cs, int64_t S, out_t fill, out_t* dst) {
  if constexpr (std::is_same_v<out_t, float>) {
    std::memcpy(dst, v, sizeof(float) * S);
  } else {
    for (int64_t j = 0; j < S; ++j) dst[j] = static_cast<out_t>(v[j]);
  }
  std::fill(dst, dst + cs.j_lo, fill);
  std::fill(dst + cs.j_hi, dst + S, fill);
}

// Horizontal pass first (Pillow's usual order).
template <typename out_t>
void preprocess_band(const uint8_t* frames, const Plan& p, const ColumnSpan& cs, out_t* out, int64_t b, int64_t r0,
                     int64_t r1, Scratch& s) {
  const int64_t S = p.g.size, H = p.g.height, W = p.g.width, S8 = (S + 7) / 8 * 8;
  int64_t ylo = H, yhi = 0;  // input rows the band reads
  int max_taps = 0;
  for (int64_t i = r0; i < r1; ++i) {
    if (p.rows.count[i] == 0) continue;
    ylo = std::min<int64_t>(ylo, p.rows.start[i]);
    yhi = std::max<int64_t>(yhi, p.rows.start[i] + p.rows.count[i]);
    max_taps = std::max(max_taps, p.rows.count[i]);
  }
  // Ring of R input rows: refilling 8 rows while output row i still needs count_i rows needs R >= count_i + 7.
  const int64_t R = (max_taps + 7 + 7) / 8 * 8, row_floats = 3 * S8;
  s.T.resize(size_t(8 * ((3 * cs.nx + 7) / 8 * 8)));
  s.ring.resize(size_t(R * row_floats));
  s.row.resize(size_t(S8));
  s.taps.resize(size_t(std::max(1, max_taps)));
  const uint8_t* rows[8];
  int64_t produced = ylo;  // next input row to resample horizontally
  for (int64_t i = r0; i < r1; ++i) {
    const int n = p.rows.count[i], y0 = p.rows.start[i];
    if (n > 0) {
      for (; produced < y0 + n; produced += 8) {
        for (int r = 0; r < 8; ++r)  // rows past the band repeat its last row (their results are never read)
          rows[r] = frames + ((b * H + std::min(produced + r, yhi - 1)) * W + cs.x_lo) * 3;
        kernels().horizontal(rows, cs.x_lo, cs.nx, p.cols, S, S8, s.T.data(),
                             s.ring.data() + (produced - ylo) % R * row_floats, row_floats);
      }
    }
    for (int c = 0; c < 3; ++c) {
      out_t* dst = out + ((b * 3 + c) * S + i) * S;
      const out_t fill = static_cast<out_t>(p.g.fill[c]);
      if (n == 0) {  // a padded row
        std::fill(dst, dst + S, fill);
        continue;
      }
      for (int t = 0; t < n; ++t) s.taps[t] = s.ring.data() + ((y0 + t - ylo) % R * 3 + c) * S8;
      float* v = s.row.data();
      kernels().vertical(s.taps.data(), &p.rows.weights[size_t(i) * p.rows.taps], n, S8, p.g.scale[c], p.g.shift[c],
                         v);
      store_row(v, cs, S, fill, dst);
    }
  }
}

// acc[k] = sum_t w[t] * src[t][k] (taps in order, from 0 as resample_pixel_2d), then Pillow's uint8 store.
__attribute__((target_clones("arch=x86-64-v3", "default")))
void vertical_u8(const uint8_t* const* src, const float* w, int taps, int64_t len, float* acc, uint8_t* mid) {
  std::fill(acc, acc + len, 0.f);
  for (int t = 0; t < taps; ++t) {
    const uint8_t* row = src[t];
    const float wt = w[t];
    for (int64_t k = 0; k < len; ++k) acc[k] += wt * static_cast<float>(row[k]);
  }
  for (int64_t k = 0; k < len; ++k) {
    const float a = acc[k] < 0.f ? 0.f : (acc[k] > 255.f ? 255.f : acc[k]);
    mid[k] = static_cast<uint8_t>(static_cast<int>(a + 0.5f));  // clip_round()
  }
}

// Vertical pass first (Pillow 13 when the vertical pass shrinks and the horizontal one enlarges): 8 output
// rows at a time are resampled vertically into uint8 rows over the needed input columns, then horizontally by
// the same 8-row kernel as the other order (which clip-rounds its sums), then normalised.
template <typename out_t>
void preprocess_band_vertical_first(const uint8_t* frames, const Plan& p, const ColumnSpan& cs, out_t* out,
                                    int64_t b, int64_t r0, int64_t r1, Scratch& s) {
  const int64_t S = p.g.size, H = p.g.height, W = p.g.width, S8 = (S + 7) / 8 * 8, K = 3 * cs.nx;
  const int64_t row_floats = 3 * S8;
  s.T.resize(size_t(8 * ((K + 7) / 8 * 8)));
  s.ring.resize(size_t(8 * row_floats));
  s.acc.resize(size_t(std::max<int64_t>(1, K)));
  s.mid.assign(size_t(8 * std::max<int64_t>(1, K)), 0);
  s.taps.resize(size_t(std::max(1, p.rows.taps)));
  std::vector<const uint8_t*> src(size_t(std::max(1, p.rows.taps)));
  for (int64_t i0 = r0; i0 < r1; i0 += 8) {
    const uint8_t* rows[8];
    for (int r = 0; r < 8; ++r) {
      const int64_t i = std::min(i0 + r, r1 - 1);  // rows past the band repeat its last row (never stored)
      const int n = p.rows.count[i];
      rows[r] = s.mid.data() + r * K;
      if (n == 0 || i0 + r >= r1) continue;
      for (int t = 0; t < n; ++t) src[t] = frames + ((b * H + p.rows.start[i] + t) * W + cs.x_lo) * 3;
      vertical_u8(src.data(), &p.rows.weights[size_t(i) * p.rows.taps], n, K, s.acc.data(), s.mid.data() + r * K);
    }
    kernels().horizontal(rows, cs.x_lo, cs.nx, p.cols, S, S8, s.T.data(), s.ring.data(), row_floats);
    for (int r = 0; r < 8 && i0 + r < r1; ++r) {
      const int64_t i = i0 + r;
      for (int c = 0; c < 3; ++c) {
        out_t* dst = out + ((b * 3 + c) * S + i) * S;
        const out_t fill = static_cast<out_t>(p.g.fill[c]);
        if (p.rows.count[i] == 0) {
          std::fill(dst, dst + S, fill);
          continue;
        }
        float* v = s.ring.data() + r * row_floats + c * S8;  // clip-rounded by the horizontal kernel
        for (int64_t j = 0; j < S8; ++j) v[j] = v[j] * p.g.scale[c] + p.g.shift[c];  // normalise_pixel()
        store_row(v, cs, S, fill, dst);
      }
    }
  }
}

template <typename out_t>
void preprocess_pointwise_rows(const uint8_t* frames, const Plan& p, out_t* out, int64_t begin, int64_t end) {
  const int64_t S = p.g.size;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / S, i = task % S;
    const uint8_t* frame = frames + b * p.g.height * p.g.width * 3;
    for (int64_t j = 0; j < S; ++j) {
      for (int c = 0; c < 3; ++c) {
        float v = p.g.fill[c];
        if (p.rows.count[i] > 0 && p.cols.count[j] > 0) {
          const float acc = resample_pixel_2d(frame, p.g.width * 3, c, p.rows.start[i], p.rows.count[i],
                                              &p.rows.weights[size_t(i) * p.rows.taps], p.cols.start[j],
                                              p.cols.count[j], &p.cols.weights[size_t(j) * p.cols.taps],
                                              p.g.vertical_first);
          v = normalise_pixel(acc, p.g.scale[c], p.g.shift[c]);
        }
        out[((b * 3 + c) * S + i) * S + j] = static_cast<out_t>(v);
      }
    }
  }
}

// A fresh output of many MB comes straight from mmap, and faulting it in 4 KiB pages costs more than the
// resampling (~4 us a page in a VM: 64 frames at 224 are 9400 pages). Advise transparent huge pages on its
// 2 MiB-aligned inside, as torch's allocator does under THP_MEM_ALLOC_ENABLE. Advice only: a failure changes
// nothing, and memory already in use keeps its pages.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

// The AVX-512 kernel's column tables (preprocess_avx512.h): output columns by four, each group running its
// largest tap count, weights zero past a column's own count and for columns without taps.
struct ColumnGroups {
  std::vector<int32_t> count, off;
  std::vector<float> w;
};
ColumnGroups column_groups(const Plan& p, const ColumnSpan& cs) {
  const int64_t S = p.g.size, G = (S + 3) / 4, taps = p.cols.taps;
  ColumnGroups q;
  q.count.assign(size_t(G), 0);
  q.off.assign(size_t(4 * G), 0);
  q.w.assign(size_t(4 * G * taps), 0.f);
  for (int64_t j = 0; j < S; ++j) {
    const int n = p.cols.count[j];
    if (n == 0) continue;
    const int64_t g = j / 4, l = j % 4;
    q.count[g] = std::max(q.count[g], n);
    q.off[4 * g + l] = static_cast<int32_t>(48 * (p.cols.start[j] - cs.x_lo));
    for (int k = 0; k < n; ++k) q.w[size_t((g * taps + k) * 4 + l)] = p.cols.weights[size_t(j * taps + k)];
  }
  return q;
}

// The AVX-512 path, float32 output: frames resampled horizontally first, and frames not resampled at all.
// Returns false where it does not apply (the generic kernels then run).
bool run_avx512(const uint8_t* src, const Plan& plan, const ColumnSpan& cs, float* dst, int64_t bands,
                int64_t band_rows, int64_t grain) {
  if (isa() != Isa::kAvx512 || plan.g.vertical_first) return false;
  const int64_t S = plan.g.size, B = plan.g.batch, H = plan.g.height, W = plan.g.width;
  const bool identity = plan.g.gx.in_size == plan.g.gx.resized && plan.g.gy.in_size == plan.g.gy.resized;
  const bool stream = B * 3 * S * S * int64_t(sizeof(float)) >= (int64_t(16) << 20);  // > half a CCD's L3
  if (identity) {
    const int64_t x0 = cs.j_hi > cs.j_lo ? plan.cols.start[cs.j_lo] : 0;
    at::parallel_for(0, B * bands, grain, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / bands, r0 = (task % bands) * band_rows;
        if (r0 >= S) continue;
        avx512::identity_band(src + b * H * W * 3, W, S, plan.rows.start.data(), plan.rows.count.data(), x0, cs.j_lo,
                              cs.j_hi, plan.g.scale.data(), plan.g.shift.data(), dst + b * 3 * S * S, r0,
                              std::min(S, r0 + band_rows), stream);
      }
    });
    return true;
  }
  // T offsets are 32-bit (48 floats an input pixel): wider spans (a squash of a > 44M-pixel-wide frame) take
  // the generic kernels.
  if (cs.nx + plan.cols.taps > std::numeric_limits<int32_t>::max() / 48) return false;
  const ColumnGroups q = column_groups(plan, cs);
  int max_taps = 1;
  for (int64_t i = 0; i < S; ++i) max_taps = std::max(max_taps, plan.rows.count[i]);
  avx512::HorizontalFirst a{};
  a.width = W;
  a.size = S;
  a.row_start = plan.rows.start.data();
  a.row_count = plan.rows.count.data();
  a.row_weights = plan.rows.weights.data();
  a.row_taps = plan.rows.taps;
  a.x_lo = cs.x_lo;
  a.nx = cs.nx;
  a.j_lo = cs.j_lo;
  a.j_hi = cs.j_hi;
  a.gcount = q.count.data();
  a.goff = q.off.data();
  a.gw = q.w.data();
  a.gtaps = plan.cols.taps;
  a.scale = plan.g.scale.data();
  a.shift = plan.g.shift.data();
  a.stream = stream;
  const size_t scratch_bytes = avx512::horizontal_first_scratch(a, max_taps);
  at::parallel_for(0, B * bands, grain, [&](int64_t begin, int64_t end) {
    // Per-thread scratch, kept between calls (a fresh ~200 KB buffer a call is mapped and faulted in again).
    thread_local std::vector<float> scratch;
    if (scratch.size() < scratch_bytes / sizeof(float) + 32) scratch.resize(scratch_bytes / sizeof(float) + 32);
    void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63));
    avx512::HorizontalFirst t = a;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / bands, r0 = (task % bands) * band_rows;
      if (r0 >= S) continue;
      t.frame = src + b * H * W * 3;
      t.out = dst + b * 3 * S * S;
      avx512::horizontal_first_band(t, r0, std::min(S, r0 + band_rows), max_taps, aligned);
    }
    if (scratch.size() > (size_t(16) << 20) / sizeof(float)) std::vector<float>().swap(scratch);  // keep <= 16 MB
  });
  return true;
}

template <bool kPointwise>
at::Tensor run(const at::Tensor& frames_in, int64_t image_size, at::ArrayRef<double> mean, at::ArrayRef<double> std,
               std::string_view resize_mode, std::string_view interpolation, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(frames_in.device().is_cpu(), "preprocess: the CPU kernel got frames on ", frames_in.device());
  Plan plan;
  plan.g = check_preprocess(frames_in, image_size, mean, std, resize_mode, interpolation, dtype);
  plan.rows = cached_axis_plan(plan.g.interpolation, plan.g.gy, plan.g.size);
  plan.cols = cached_axis_plan(plan.g.interpolation, plan.g.gx, plan.g.size);
  const at::Tensor frames = frames_in.contiguous();  // documented: non-contiguous frames are copied once
  at::Tensor out = at::empty({plan.g.batch, 3, plan.g.size, plan.g.size}, frames.options().dtype(dtype));
  if constexpr (!kPointwise) advise_huge_pages(out.data_ptr(), out.nbytes());
  const uint8_t* src = frames.data_ptr<uint8_t>();
  const int64_t S = plan.g.size, B = plan.g.batch;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "vlmreward_preprocess_cpu", [&] {
    scalar_t* dst = out.data_ptr<scalar_t>();
    if constexpr (kPointwise) {
      at::parallel_for(0, B * S, 1, [&](int64_t begin, int64_t end) { preprocess_pointwise_rows(src, plan, dst, begin, end); });
    } else {
      const ColumnSpan cs = column_span(plan);
      // Bands per frame: enough tasks for every thread, but bands of >= 16 rows (band edges redo work).
      const int64_t threads = at::get_num_threads();
      // One thread: one band per frame (a band edge redoes up to 16 + taps input rows of the horizontal pass).
      const int64_t bands =
          threads <= 1 ? 1 : std::clamp<int64_t>((2 * threads + B - 1) / B, 1, std::max<int64_t>(1, S / 16));
      const int64_t band_rows = (S + bands - 1) / bands;
      // One task resamples ~S * S * 3 * taps values: below ~2 frames of 64 px, threads cost more than they save.
      const int64_t grain = S * S >= 8192 ? 1 : std::max<int64_t>(1, 16384 / (S * S));
      if (std::is_same_v<scalar_t, float> &&
          run_avx512(src, plan, cs, reinterpret_cast<float*>(dst), bands, band_rows, grain))
        return;
      at::parallel_for(0, B * bands, grain, [&](int64_t begin, int64_t end) {
        Scratch scratch;
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / bands, r0 = (task % bands) * band_rows;
          if (r0 >= S) continue;
          const int64_t r1 = std::min(S, r0 + band_rows);
          if (plan.g.vertical_first) preprocess_band_vertical_first(src, plan, cs, dst, b, r0, r1, scratch);
          else preprocess_band(src, plan, cs, dst, b, r0, r1, scratch);
        }
      });
    }
  });
  return out;
}

}  // namespace

at::Tensor preprocess_cpu(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                          at::ArrayRef<double> std, std::string_view resize_mode, std::string_view interpolation,
                          at::ScalarType dtype) {
  return run<false>(frames, image_size, mean, std, resize_mode, interpolation, dtype);
}

at::Tensor preprocess_pointwise_cpu(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, std::string_view resize_mode,
                                    std::string_view interpolation, at::ScalarType dtype) {
  return run<true>(frames, image_size, mean, std, resize_mode, interpolation, dtype);
}

}  // namespace vlmreward
