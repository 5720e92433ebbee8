// The reward_head op: image embeddings + cached goal bank -> per-goal probabilities and rewards.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "reward_head_math.h"

namespace vlmreward {

// Checked, device-agnostic first half: cos (B,K) float64 of L2-normalised embeddings, the goal_sets
// (G,1+N) int64 and, when given, goal_ids (B,) int64, all on one device. Raises c10::Error on bad input.
// Also allocates the outputs: probs and rewards, float32, (B, G) or (B,) with goal_ids (cols = G or 1).
struct RewardHeadInputs {
  at::Tensor cos, goal_sets, goal_ids;  // goal_ids undefined when absent
  at::Tensor probs, rewards;
  int64_t cols = 0;
  int mode = kBinary;
};

RewardHeadInputs prepare_reward_head(const at::Tensor& image_embeddings, const at::Tensor& text_embeddings,
                                     const at::Tensor& goal_sets, double logit_scale, double threshold,
                                     const std::optional<at::Tensor>& goal_ids, std::string_view mode);

using RewardHeadFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                        double, double, const std::optional<at::Tensor>&,
                                                        std::string_view);
RewardHeadFn reward_head_cpu;
#ifdef VLMREWARD_WITH_CUDA
RewardHeadFn reward_head_cuda;
#endif

}  // namespace vlmreward
