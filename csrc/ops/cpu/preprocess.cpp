// CPU kernels of the preprocess op.
//
// Fast path, in Pillow's order: a task is a band of output rows of one frame. It resamples horizontally
// only the input rows the band reads (each pixel as a 4-float vector, so the 3 channels share one FMA),
// stores them clipped and rounded as Pillow's uint8 intermediate would be, in three planes of width S, then
// resamples vertically with contiguous FMAs straight into the normalised output planes. The band buffer is
// (input rows of the band) x 3 x S floats, a fraction of a frame that stays in cache: no full-size float
// copy of a frame is ever made. Bands spread small batches over all threads; large batches get one band
// per frame.
#include "../preprocess.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <vector>

namespace vlmreward {
namespace {

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

// The two hot loops are compiled for AVX2+FMA as well as the baseline, picked at load time (GCC ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define VLM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VLM_MULTIVERSION
#endif

// Horizontal pass of one input row (RGB; only pixels [x_lo, x_hi) are read, the columns that any output
// column uses: a centre crop skips the rest) into planes h[c * S + j]; padded columns are left 0.
// The row is widened to floats in one vectorisable loop; a pixel is then one unaligned 4-float load (the
// 4th lane is the next pixel's red, ignored; `rowf` has one float of slack), and two accumulators break
// the add-latency chain over the taps.
VLM_MULTIVERSION void horizontal_row(const uint8_t* row, int64_t x_lo, int64_t x_hi, const AxisPlan& cols, int64_t S,
                                     float* rowf, float* h) {
  for (int64_t k = 3 * x_lo; k < 3 * x_hi; ++k) rowf[k - 3 * x_lo] = static_cast<float>(row[k]);
  rowf[3 * (x_hi - x_lo)] = 0.f;
  for (int64_t j = 0; j < S; ++j) {
    const int n = cols.count[j];
    const float* w = &cols.weights[size_t(j) * cols.taps];
    const float* p = rowf + 3 * (int64_t(cols.start[j]) - x_lo);
    v4f acc0 = {0.f, 0.f, 0.f, 0.f}, acc1 = acc0, v0, v1;
    int k = 0;
    for (; k + 1 < n; k += 2) {
      __builtin_memcpy(&v0, p + 3 * k, sizeof(v4f));
      __builtin_memcpy(&v1, p + 3 * k + 3, sizeof(v4f));
      acc0 += w[k] * v0;
      acc1 += w[k + 1] * v1;
    }
    if (k < n) {
      __builtin_memcpy(&v0, p + 3 * k, sizeof(v4f));
      acc0 += w[k] * v0;
    }
    // clip_round() of the three channels at once (same arithmetic, vector instructions).
    acc0 += acc1;
    acc0 = acc0 < 0.f ? 0.f : acc0;
    acc0 = acc0 > 255.f ? 255.f : acc0;
    acc0 = __builtin_convertvector(__builtin_convertvector(acc0 + 0.5f, v4i), v4f);
    h[j] = acc0[0];
    h[S + j] = acc0[1];
    h[2 * S + j] = acc0[2];
  }
}

// acc[j] = sum_t w[t] * src[t * stride + j] for j < S: the vertical pass of one output row and channel.
VLM_MULTIVERSION void vertical_row(const float* src, int64_t stride, const float* w, int taps, int64_t S, float* acc) {
  std::fill(acc, acc + S, 0.f);
  for (int t = 0; t < taps; ++t) {
    const float* s = src + t * stride;
    const float wt = w[t];
    for (int64_t j = 0; j < S; ++j) acc[j] += wt * s[j];
  }
}

template <typename out_t>
void preprocess_band(const uint8_t* frames, const PreprocessPlan& p, out_t* out, int64_t b, int64_t r0, int64_t r1,
                     std::vector<float>& rowf, std::vector<float>& band, std::vector<float>& acc) {
  const int64_t S = p.size, H = p.height, W = p.width;
  int64_t ylo = H, yhi = 0;  // input rows the band reads
  for (int64_t i = r0; i < r1; ++i) {
    if (p.rows.count[i] == 0) continue;
    ylo = std::min<int64_t>(ylo, p.rows.start[i]);
    yhi = std::max<int64_t>(yhi, p.rows.start[i] + p.rows.count[i]);
  }
  const int64_t row_floats = 3 * S;
  int64_t x_lo = W, x_hi = 0;  // input columns any output column reads
  for (int64_t j = 0; j < S; ++j) {
    if (p.cols.count[j] == 0) continue;
    x_lo = std::min<int64_t>(x_lo, p.cols.start[j]);
    x_hi = std::max<int64_t>(x_hi, p.cols.start[j] + p.cols.count[j]);
  }
  if (ylo < yhi) {
    band.resize(size_t((yhi - ylo) * row_floats));
    for (int64_t y = ylo; y < yhi; ++y)
      horizontal_row(frames + (b * H + y) * W * 3, x_lo, x_hi, p.cols, S, rowf.data(),
                     band.data() + (y - ylo) * row_floats);
  }
  for (int64_t i = r0; i < r1; ++i) {
    for (int c = 0; c < 3; ++c) {
      out_t* dst = out + ((b * 3 + c) * S + i) * S;
      if (p.rows.count[i] == 0) {  // a padded row
        std::fill(dst, dst + S, static_cast<out_t>(p.fill[c]));
        continue;
      }
      vertical_row(band.data() + (p.rows.start[i] - ylo) * row_floats + c * S, row_floats,
                   &p.rows.weights[size_t(i) * p.rows.taps], p.rows.count[i], S, acc.data());
      // Valid (non-padded) columns are one contiguous run; this loop vectorises.
      for (int64_t j = 0; j < S; ++j) dst[j] = static_cast<out_t>(normalise_pixel(acc[j], p.scale[c], p.shift[c]));
      for (int64_t j = 0; j < S; ++j)
        if (p.cols.count[j] == 0) dst[j] = static_cast<out_t>(p.fill[c]);
    }
  }
}

template <typename out_t>
void preprocess_pointwise_rows(const uint8_t* frames, const PreprocessPlan& p, out_t* out, int64_t begin,
                               int64_t end) {
  const int64_t S = p.size;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / S, i = task % S;
    const uint8_t* frame = frames + b * p.height * p.width * 3;
    for (int64_t j = 0; j < S; ++j) {
      for (int c = 0; c < 3; ++c) {
        float v = p.fill[c];
        if (p.rows.count[i] > 0 && p.cols.count[j] > 0) {
          const float acc = resample_pixel_2d(frame, p.width * 3, c, p.rows.start[i], p.rows.count[i],
                                              &p.rows.weights[size_t(i) * p.rows.taps], p.cols.start[j],
                                              p.cols.count[j], &p.cols.weights[size_t(j) * p.cols.taps]);
          v = normalise_pixel(acc, p.scale[c], p.shift[c]);
        }
        out[((b * 3 + c) * S + i) * S + j] = static_cast<out_t>(v);
      }
    }
  }
}

template <bool kPointwise>
at::Tensor run(const at::Tensor& frames_in, int64_t image_size, at::ArrayRef<double> mean, at::ArrayRef<double> std,
               std::string_view resize_mode, std::string_view interpolation, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(frames_in.device().is_cpu(), "preprocess: the CPU kernel got frames on ", frames_in.device());
  const auto plan = make_preprocess_plan(frames_in, image_size, mean, std, std::string(resize_mode),
                                         std::string(interpolation), dtype);
  const at::Tensor frames = frames_in.contiguous();  // documented: non-contiguous frames are copied once
  at::Tensor out = at::empty({plan.batch, 3, plan.size, plan.size}, frames.options().dtype(dtype));
  const uint8_t* src = frames.data_ptr<uint8_t>();
  const int64_t S = plan.size, B = plan.batch;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "vlmreward_preprocess_cpu", [&] {
    scalar_t* dst = out.data_ptr<scalar_t>();
    if constexpr (kPointwise) {
      at::parallel_for(0, B * S, 1, [&](int64_t begin, int64_t end) { preprocess_pointwise_rows(src, plan, dst, begin, end); });
    } else {
      // Bands per frame: enough tasks for every thread, but bands of >= 16 rows (band edges redo work).
      const int64_t threads = at::get_num_threads();
      const int64_t bands = std::clamp<int64_t>((2 * threads + B - 1) / B, 1, std::max<int64_t>(1, S / 16));
      const int64_t band_rows = (S + bands - 1) / bands;
      at::parallel_for(0, B * bands, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> rowf(3 * plan.width + 1);
        std::vector<float> band, acc(S);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / bands, r0 = (task % bands) * band_rows;
          if (r0 < S) preprocess_band(src, plan, dst, b, r0, std::min(S, r0 + band_rows), rowf, band, acc);
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
