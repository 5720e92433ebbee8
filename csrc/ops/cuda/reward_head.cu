// CUDA kernels of the reward_head op: thin launchers over reward_head_math.h (exercised by the CPU build).
#include "../reward_head.h"

#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace vlmreward {
namespace {

__global__ void row_exps_kernel(const double* __restrict__ cos, int64_t B, int64_t K, double scale,
                                double* __restrict__ exps) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b < B) row_exps(cos + b * K, K, scale, exps + b * K);
}

__global__ void goal_probability_kernel(const double* __restrict__ cos, const double* __restrict__ exps,
                                        const int64_t* __restrict__ sets, const int64_t* __restrict__ ids, int64_t B,
                                        int64_t K, int64_t cols, int64_t M, double scale, double threshold, int mode,
                                        float* __restrict__ probs, float* __restrict__ rewards) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= B * cols) return;
  const int64_t b = t / cols, c = t % cols;
  const int64_t* set = sets + (ids != nullptr ? ids[b] : c) * M;
  const double p = goal_probability(cos + b * K, exps + b * K, scale, set, M);
  probs[t] = static_cast<float>(p);
  rewards[t] = reward_from(mode, p, cos[b * K + set[0]], threshold);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reward_head_cuda(const at::Tensor& image, const at::Tensor& text,
                                                    const at::Tensor& goal_sets, double logit_scale, double threshold,
                                                    const std::optional<at::Tensor>& goal_ids, std::string_view mode) {
  TORCH_CHECK_VALUE(image.device().is_cuda(), "reward_head: the CUDA kernel got tensors on ", image.device());
  const c10::cuda::CUDAGuard guard(image.device());
  const RewardHeadInputs in = prepare_reward_head(image, text, goal_sets, logit_scale, threshold, goal_ids, mode);
  const int64_t B = in.cos.size(0), K = in.cos.size(1), M = in.goal_sets.size(1);
  const bool per_frame_goal = in.goal_ids.defined();
  const int64_t cols = in.cols;
  at::Tensor exps = at::empty_like(in.cos);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  constexpr int kThreads = 256;
  row_exps_kernel<<<(B + kThreads - 1) / kThreads, kThreads, 0, stream>>>(in.cos.data_ptr<double>(), B, K,
                                                                           logit_scale, exps.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  goal_probability_kernel<<<(B * cols + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
      in.cos.data_ptr<double>(), exps.data_ptr<double>(), in.goal_sets.data_ptr<int64_t>(),
      per_frame_goal ? in.goal_ids.data_ptr<int64_t>() : nullptr, B, K, cols, M, logit_scale, threshold, in.mode,
      in.probs.data_ptr<float>(), in.rewards.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {in.probs, in.rewards};
}

}  // namespace vlmreward
