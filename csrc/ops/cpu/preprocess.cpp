// CPU kernels of the preprocess op.
//
// Fast path: for each output row, a vertical pass over the needed input columns (contiguous uint8 ->
// float FMAs that the compiler vectorises) into a row buffer that stays in L1/L2, then a horizontal pass
// that writes the three normalised planes. No full-size float copy of a frame is ever made; each worker
// handles whole output rows, so frames and rows are spread over threads alike.
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

// Range of input columns that any output column reads: the vertical pass computes only these.
std::pair<int, int> needed_columns(const AxisPlan& cols) {
  int lo = INT32_MAX, hi = 0;
  for (size_t j = 0; j < cols.count.size(); ++j) {
    if (cols.count[j] == 0) continue;
    lo = std::min(lo, cols.start[j]);
    hi = std::max(hi, cols.start[j] + cols.count[j]);
  }
  return lo < hi ? std::make_pair(lo, hi) : std::make_pair(0, 0);
}

// tmp[k] = sum_i w[i] * src[i * stride + k], k < n: the vertical pass over one output row.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void vertical_pass(const uint8_t* src, int64_t stride, const float* w, int taps, float* tmp, int64_t n) {
  std::fill(tmp, tmp + n, 0.f);
  for (int i = 0; i < taps; ++i) {
    const uint8_t* s = src + i * stride;
    const float wi = w[i];
    for (int64_t k = 0; k < n; ++k) tmp[k] += wi * static_cast<float>(s[k]);
  }
}

template <typename out_t>
void preprocess_rows(const uint8_t* frames, const PreprocessPlan& p, out_t* out, int64_t begin, int64_t end) {
  const int64_t S = p.size, H = p.height, W = p.width;
  const auto [col_lo, col_hi] = needed_columns(p.cols);
  const int64_t n = int64_t(col_hi - col_lo) * 3;
  std::vector<float> tmp(std::max<int64_t>(n, 1));
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / S, i = task % S;
    out_t* planes[3];
    for (int c = 0; c < 3; ++c) planes[c] = out + ((b * 3 + c) * S + i) * S;
    if (p.rows.count[i] == 0) {  // a padded row
      for (int c = 0; c < 3; ++c) std::fill(planes[c], planes[c] + S, static_cast<out_t>(p.fill[c]));
      continue;
    }
    const uint8_t* src = frames + (b * H + p.rows.start[i]) * W * 3 + int64_t(col_lo) * 3;
    vertical_pass(src, W * 3, &p.rows.weights[size_t(i) * p.rows.taps], p.rows.count[i], tmp.data(), n);
    for (int64_t j = 0; j < S; ++j) {
      const int nx = p.cols.count[j];
      if (nx == 0) {
        for (int c = 0; c < 3; ++c) planes[c][j] = static_cast<out_t>(p.fill[c]);
        continue;
      }
      const float* w = &p.cols.weights[size_t(j) * p.cols.taps];
      const float* t = tmp.data() + int64_t(p.cols.start[j] - col_lo) * 3;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f;
      for (int k = 0; k < nx; ++k) {
        a0 += w[k] * t[3 * k];
        a1 += w[k] * t[3 * k + 1];
        a2 += w[k] * t[3 * k + 2];
      }
      planes[0][j] = static_cast<out_t>(normalise_pixel(a0, p.scale[0], p.shift[0]));
      planes[1][j] = static_cast<out_t>(normalise_pixel(a1, p.scale[1], p.shift[1]));
      planes[2][j] = static_cast<out_t>(normalise_pixel(a2, p.scale[2], p.shift[2]));
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
  const int64_t rows = plan.batch * plan.size;
  // ~one output row per task costs about as much as a thread wake-up; group rows so each task does real work.
  const int64_t grain = std::max<int64_t>(1, std::min<int64_t>(plan.size, rows / (4 * at::get_num_threads())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "vlmreward_preprocess_cpu", [&] {
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      if constexpr (kPointwise) preprocess_pointwise_rows(src, plan, dst, begin, end);
      else preprocess_rows(src, plan, dst, begin, end);
    });
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
