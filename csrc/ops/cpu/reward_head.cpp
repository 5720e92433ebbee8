// CPU kernel of the reward_head op.
//
// Cosines: one BLAS matmul of the raw embeddings in their own precision (float32 for float32/float16/
// bfloat16 inputs, float64 for float64), scaled by inverse L2 norms computed in float64; then, per frame, the
// logits and their exponentials in float64 (a vectorised exp) and each requested goal's softmax over its set.
// Float32 dots keep the relative error of p well inside 1e-4 at logit_scale 100 (the documented contract;
// 1e-5 for float64 inputs) at half the cost of float64 ones.
//
// Small problems run on the calling thread: a parallel region on a loaded machine waits for a preempted
// sibling thread (milliseconds), far longer than the work.
#include "../reward_head.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace vlmreward {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VLM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VLM_CLONES
#endif

// Work (element operations) below which a loop stays on the calling thread, and per task above it.
constexpr int64_t kSerialWork = int64_t(1) << 21;
constexpr int64_t kTaskWork = int64_t(1) << 18;

template <typename F>
void maybe_parallel(int64_t n, int64_t work_per_item, const F& f) {
  if (n * work_per_item < kSerialWork) {
    f(0, n);
    return;
  }
  at::parallel_for(0, n, std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, work_per_item)), f);
}

// x[i] = exp(x[i]) for x[i] <= 0 (differences to a maximum); below -708 (results under DBL_MIN) gives 0.
// Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, and a degree-10 Taylor polynomial (truncation
// < 1e-11 relative): plain arithmetic that the compiler vectorises, unlike libm's exp.
VLM_CLONES void exp_nonpositive(double* x, int64_t n) {
  constexpr double kMagic = 0x1.8p52;  // adding it rounds to an integer held in the low mantissa bits
  constexpr int64_t kMagicBits = std::bit_cast<int64_t>(kMagic);
  for (int64_t i = 0; i < n; ++i) {
    const double v0 = x[i];
    const double v = v0 < -708.0 ? -708.0 : v0;  // -inf (padding) included
    const double t = v * 1.4426950408889634 + kMagic;
    const double k = t - kMagic;
    const double r = (v - k * 0.6931471803691238) - k * 1.9082149292705877e-10;  // ln2 split: k * hi is exact
    double p = 2.755731922398589e-07;                                             // 1/10!
    p = p * r + 2.755731922398589e-06;
    p = p * r + 2.48015873015873e-05;
    p = p * r + 1.984126984126984e-04;
    p = p * r + 1.388888888888889e-03;
    p = p * r + 8.333333333333333e-03;
    p = p * r + 4.166666666666666e-02;
    p = p * r + 1.666666666666667e-01;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const double two_k = std::bit_cast<double>((std::bit_cast<int64_t>(t) - kMagicBits + 1023) << 52);
    x[i] = v0 < -708.0 ? 0.0 : p * two_k;
  }
}

// inv[r] = 1 / ||x_r|| in float64 for the rows of a contiguous (R, D) matrix; false if a norm is zero, NaN
// or infinite.
template <typename T>
bool inverse_norms(const T* x, int64_t R, int64_t D, double* inv) {
  bool ok = true;
  for (int64_t r = 0; r < R; ++r) {
    const T* row = x + r * D;
    double acc[4] = {0, 0, 0, 0};  // four chains: vectorisable without reassociation
    int64_t d = 0;
    for (; d + 4 <= D; d += 4)
      for (int q = 0; q < 4; ++q) acc[q] += double(row[d + q]) * double(row[d + q]);
    for (; d < D; ++d) acc[0] += double(row[d]) * double(row[d]);
    const double n = std::sqrt((acc[0] + acc[1]) + (acc[2] + acc[3]));
    ok = ok && n > 0 && std::isfinite(n);
    inv[r] = 1.0 / n;
  }
  return ok;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> run(const RewardHeadShape& s, const at::Tensor& image, const at::Tensor& text,
                                       const at::Tensor& sets_t, const at::Tensor& ids_t, double scale,
                                       double threshold) {
  const int64_t B = s.B, K = s.K, D = s.D, M = s.M, cols = s.with_ids ? 1 : s.G;
  const at::ScalarType st = c10::CppTypeToScalarType<T>::value;
  const at::Tensor x = image.to(st).contiguous(), t = text.to(st).contiguous();
  std::vector<double> inv_x(B), inv_t(K);
  std::atomic<bool> ok_x{true};
  maybe_parallel(B, D, [&](int64_t b0, int64_t b1) {
    if (!inverse_norms(x.data_ptr<T>() + b0 * D, b1 - b0, D, inv_x.data() + b0)) ok_x = false;
  });
  const bool ok_t = inverse_norms(t.data_ptr<T>(), K, D, inv_t.data());
  TORCH_CHECK_VALUE(ok_x.load(), "reward_head: image_embeddings contain NaN/Inf values or an all-zero row");
  TORCH_CHECK_VALUE(ok_t, "reward_head: text_embeddings contain NaN/Inf values or an all-zero row");
  const at::Tensor dots_t = at::mm(x, t.t());  // (B, K), contiguous
  const T* dots = dots_t.data_ptr<T>();
  const int64_t* sets = sets_t.data_ptr<int64_t>();
  const int64_t* ids = s.with_ids ? ids_t.data_ptr<int64_t>() : nullptr;
  at::Tensor probs = s.with_ids ? at::empty({B}, image.options().dtype(at::kFloat))
                                : at::empty({B, s.G}, image.options().dtype(at::kFloat));
  at::Tensor rewards = at::empty_like(probs);
  float* p_out = probs.data_ptr<float>();
  float* r_out = rewards.data_ptr<float>();
  const int mode = s.mode;
  if (s.with_ids) {  // only the frame's own goal: M logits and exponentials per frame
    maybe_parallel(B, M, [&](int64_t b0, int64_t b1) {
      std::vector<double> l(M);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t* set = sets + ids[b] * M;
        const T* row = dots + b * K;
        const double sx = scale * inv_x[b];
        for (int64_t i = 0; i < M; ++i) {  // padding (-1) -> -inf -> exp 0
          const int64_t k = set[i] < 0 ? set[0] : set[i];
          l[i] = set[i] < 0 ? -INFINITY : sx * (double(row[k]) * inv_t[k]);
        }
        double m4[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        int64_t i = 0;
        for (; i + 4 <= M; i += 4)
          for (int q = 0; q < 4; ++q) m4[q] = l[i + q] > m4[q] ? l[i + q] : m4[q];
        for (; i < M; ++i) m4[0] = l[i] > m4[0] ? l[i] : m4[0];
        const double m = std::max(std::max(m4[0], m4[1]), std::max(m4[2], m4[3]));
        for (int64_t j = 0; j < M; ++j) l[j] -= m;
        exp_nonpositive(l.data(), M);
        double s4[4] = {0, 0, 0, 0};
        for (i = 0; i + 4 <= M; i += 4)
          for (int q = 0; q < 4; ++q) s4[q] += l[i + q];
        for (; i < M; ++i) s4[0] += l[i];
        const double sum = (s4[0] + s4[1]) + (s4[2] + s4[3]);
        const double p = l[0] / sum;  // set[0], the goal, is never padding
        p_out[b] = static_cast<float>(p);
        r_out[b] = reward_from(mode, p, double(row[set[0]]) * inv_x[b] * inv_t[set[0]], threshold);
      }
    });
  } else {  // every goal: the frame's K exponentials (relative to its best logit) are shared by all sets
    maybe_parallel(B, K + cols * M, [&](int64_t b0, int64_t b1) {
      std::vector<double> cos(K), e(K);
      for (int64_t b = b0; b < b1; ++b) {
        const T* row = dots + b * K;
        double m = -INFINITY;
        for (int64_t k = 0; k < K; ++k) {
          cos[k] = double(row[k]) * inv_x[b] * inv_t[k];
          e[k] = scale * cos[k];
          m = std::max(m, e[k]);
        }
        for (int64_t k = 0; k < K; ++k) e[k] -= m;
        exp_nonpositive(e.data(), K);
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t* set = sets + c * M;
          const double p = goal_probability(cos.data(), e.data(), scale, set, M);
          p_out[b * cols + c] = static_cast<float>(p);
          r_out[b * cols + c] = reward_from(mode, p, cos[set[0]], threshold);
        }
      }
    });
  }
  return {probs, rewards};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reward_head_cpu(const at::Tensor& image, const at::Tensor& text,
                                                   const at::Tensor& goal_sets, double logit_scale, double threshold,
                                                   const std::optional<at::Tensor>& goal_ids, std::string_view mode,
                                                   bool bank_checked) {
  TORCH_CHECK_VALUE(image.device().is_cpu(), "reward_head: the CPU kernel got tensors on ", image.device());
  const RewardHeadShape s = check_reward_head(image, text, goal_sets, logit_scale, threshold, goal_ids, mode);
  // On the CPU every value check runs on every call, bank_checked or not: they cost ~G * M + B compares and
  // keep out-of-range reads impossible.
  (void)bank_checked;
  const at::Tensor sets = goal_sets.contiguous();
  const int64_t* p = sets.data_ptr<int64_t>();
  bool sets_ok = true;
  for (int64_t g = 0; g < s.G; ++g) sets_ok = sets_ok && valid_set(p + g * s.M, s.M, s.K);
  TORCH_CHECK_VALUE(sets_ok, "reward_head: goal_sets entries must index text_embeddings (0 <= k < K = ", s.K,
                    ", -1 for padding) and the first column (the goal) cannot be padding");
  at::Tensor ids;
  if (s.with_ids) {
    ids = goal_ids->contiguous();
    const int64_t* q = ids.data_ptr<int64_t>();
    bool ids_ok = true;
    for (int64_t b = 0; b < s.B; ++b) ids_ok = ids_ok && q[b] >= 0 && q[b] < s.G;
    TORCH_CHECK_VALUE(ids_ok, "reward_head: goal_ids must be in [0, G = ", s.G, ")");
  }
  if (image.scalar_type() == at::kDouble || text.scalar_type() == at::kDouble)
    return run<double>(s, image, text, sets, ids, logit_scale, threshold);
  return run<float>(s, image, text, sets, ids, logit_scale, threshold);
}

}  // namespace vlmreward
