// CUDA kernels of the reward_head op: thin launchers over reward_head_math.h.
//
// No host synchronisation when the goal bank was validated once (bank_checked, as GoalBank does): the
// cosines are an ATen float64 matmul and norm, the kernels read only device memory, and per-call value
// problems that would need a sync to raise -- a zero/NaN/Inf image embedding, a goal_id outside [0, G), a
// goal_sets entry outside [-1, K) -- give NaN in that frame's probs and rewards instead (never an
// out-of-bounds read). Without bank_checked every value is checked and raised as on the CPU, at the price of
// one host sync. Both paths are capturable in a CUDA graph when bank_checked is set.
#include "../reward_head.h"

#include <ATen/ops/all.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/logical_and.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/stack.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <vector>

namespace vlmreward {
namespace {

VLM_HD bool valid_norm(double n) { return n > 0.0 && n < INFINITY; }  // false for NaN too

// cos (B, K) in place from dots and norms, then each frame's K shared exponentials. One thread per frame.
__global__ void row_exps_kernel(double* __restrict__ cos, const double* __restrict__ nx, const double* __restrict__ nt,
                                int64_t B, int64_t K, double scale, double* __restrict__ exps) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < B; b += int64_t(gridDim.x) * blockDim.x) {
    double* row = cos + b * K;
    for (int64_t k = 0; k < K; ++k) row[k] = row[k] / (nx[b] * nt[k]);
    row_exps(row, K, scale, exps + b * K);
  }
}

__global__ void goal_probability_kernel(const double* __restrict__ cos, const double* __restrict__ exps,
                                        const double* __restrict__ nx, const int64_t* __restrict__ sets,
                                        const int64_t* __restrict__ ids, int64_t B, int64_t K, int64_t G,
                                        int64_t cols, int64_t M, double scale, double threshold, int mode,
                                        float* __restrict__ probs, float* __restrict__ rewards) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < B * cols;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = t / cols, c = t % cols;
    const int64_t g = ids != nullptr ? ids[b] : c;
    if (g < 0 || g >= G || !valid_norm(nx[b]) || !valid_set(sets + g * M, M, K)) {
      probs[t] = rewards[t] = NAN;  // a value error the sync-free path cannot raise
      continue;
    }
    const int64_t* set = sets + g * M;
    const double p = goal_probability(cos + b * K, exps + b * K, scale, set, M);
    probs[t] = static_cast<float>(p);
    rewards[t] = reward_from(mode, p, cos[b * K + set[0]], threshold);
  }
}

int blocks_for(int64_t n, int threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535)));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reward_head_cuda(const at::Tensor& image, const at::Tensor& text,
                                                    const at::Tensor& goal_sets, double logit_scale, double threshold,
                                                    const std::optional<at::Tensor>& goal_ids, std::string_view mode,
                                                    bool bank_checked) {
  TORCH_CHECK_VALUE(image.device().is_cuda(), "reward_head: the CUDA kernel got tensors on ", image.device());
  const RewardHeadShape s = check_reward_head(image, text, goal_sets, logit_scale, threshold, goal_ids, mode);
  const c10::cuda::CUDAGuard guard(image.device());
  const int64_t B = s.B, K = s.K, G = s.G, M = s.M, cols = s.with_ids ? 1 : G;
  const at::Tensor x = image.to(at::kDouble), t = text.to(at::kDouble);
  const at::Tensor nx = at::linalg_vector_norm(x, 2, {1}).contiguous();
  const at::Tensor nt = at::linalg_vector_norm(t, 2, {1}).contiguous();
  const at::Tensor sets = goal_sets.contiguous();
  const at::Tensor ids = s.with_ids ? goal_ids->contiguous() : at::Tensor();
  if (!bank_checked) {  // every value check, decided by one host sync
    const auto finite_pos = [](const at::Tensor& n) { return at::all(at::logical_and(at::isfinite(n), n.gt(0))); };
    const at::Tensor set_ok = at::all(at::logical_and(sets.ge(-1), sets.lt(K))).logical_and(at::all(sets.select(1, 0).ge(0)));
    std::vector<at::Tensor> flags{finite_pos(nx), finite_pos(nt), set_ok};
    if (s.with_ids) flags.push_back(at::all(at::logical_and(ids.ge(0), ids.lt(G))));
    const at::Tensor ok = at::stack(flags).cpu();  // the one sync
    const bool* f = ok.data_ptr<bool>();
    TORCH_CHECK_VALUE(f[0], "reward_head: image_embeddings contain NaN/Inf values or an all-zero row");
    TORCH_CHECK_VALUE(f[1], "reward_head: text_embeddings contain NaN/Inf values or an all-zero row");
    TORCH_CHECK_VALUE(f[2], "reward_head: goal_sets entries must index text_embeddings (0 <= k < K = ", K,
                      ", -1 for padding) and the first column (the goal) cannot be padding");
    TORCH_CHECK_VALUE(!s.with_ids || f[3], "reward_head: goal_ids must be in [0, G = ", G, ")");
  }
  at::Tensor cos = at::mm(x, t.t()).contiguous();  // dots, turned into cosines in place
  at::Tensor exps = at::empty_like(cos);
  const auto opts = image.options().dtype(at::kFloat);
  at::Tensor probs = s.with_ids ? at::empty({B}, opts) : at::empty({B, G}, opts);
  at::Tensor rewards = at::empty_like(probs);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  constexpr int kThreads = 256;
  row_exps_kernel<<<blocks_for(B, kThreads), kThreads, 0, stream>>>(cos.data_ptr<double>(), nx.data_ptr<double>(),
                                                                     nt.data_ptr<double>(), B, K, logit_scale,
                                                                     exps.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  goal_probability_kernel<<<blocks_for(B * cols, kThreads), kThreads, 0, stream>>>(
      cos.data_ptr<double>(), exps.data_ptr<double>(), nx.data_ptr<double>(), sets.data_ptr<int64_t>(),
      s.with_ids ? ids.data_ptr<int64_t>() : nullptr, B, K, G, cols, M, logit_scale, threshold, s.mode,
      probs.data_ptr<float>(), rewards.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {probs, rewards};
}

}  // namespace vlmreward
