// The reward_head op: image embeddings + cached goal bank -> per-goal probabilities and rewards.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "reward_head_math.h"

namespace vlmreward {

// Sizes and mode of a checked call: image (B, D), text (K, D), goal_sets (G, M = 1 + N), goal_ids (B,).
struct RewardHeadShape {
  int64_t B = 0, K = 0, D = 0, G = 0, M = 0;
  bool with_ids = false;
  int mode = kBinary;
};

// Checks dtypes, shapes, devices, logit_scale, threshold and mode (metadata and host scalars only: no
// device access, no sync). Raises c10::Error subclasses (ValueError / TypeError) naming the problem. Value
// checks (indices in range, finite non-zero embeddings) are the kernels' (see reward_head_cpu/_cuda).
RewardHeadShape check_reward_head(const at::Tensor& image_embeddings, const at::Tensor& text_embeddings,
                                  const at::Tensor& goal_sets, double logit_scale, double threshold,
                                  const std::optional<at::Tensor>& goal_ids, std::string_view mode);

using RewardHeadFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                        double, double, const std::optional<at::Tensor>&,
                                                        std::string_view, bool);
RewardHeadFn reward_head_cpu;
#ifdef VLMREWARD_WITH_CUDA
RewardHeadFn reward_head_cuda;
#endif

}  // namespace vlmreward
