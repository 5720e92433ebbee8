// Argument checks of the reward_head op (metadata only; shared by the CPU and CUDA kernels).
#include "reward_head.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace vlmreward {

RewardHeadShape check_reward_head(const at::Tensor& image, const at::Tensor& text, const at::Tensor& goal_sets,
                                  double logit_scale, double threshold, const std::optional<at::Tensor>& goal_ids,
                                  std::string_view mode) {
  const auto floating = [](const at::Tensor& t) {
    const auto s = t.scalar_type();
    return s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble;
  };
  TORCH_CHECK_TYPE(floating(image) && floating(text), "reward_head: embeddings must be float32/float16/bfloat16/"
                   "float64, got ", image.scalar_type(), " and ", text.scalar_type());
  TORCH_CHECK_VALUE(image.dim() == 2, "reward_head: image_embeddings must be (B, D), got ", image.sizes());
  TORCH_CHECK_VALUE(text.dim() == 2, "reward_head: text_embeddings must be (K, D), got ", text.sizes());
  TORCH_CHECK_VALUE(image.size(0) > 0, "reward_head: empty batch (B = 0)");
  TORCH_CHECK_VALUE(text.size(0) > 0, "reward_head: text_embeddings is empty (K = 0)");
  TORCH_CHECK_VALUE(image.size(1) == text.size(1), "reward_head: embedding sizes differ: image D = ", image.size(1),
                    ", text D = ", text.size(1));
  TORCH_CHECK_VALUE(image.size(1) > 0, "reward_head: embeddings are empty (D = 0)");
  TORCH_CHECK_TYPE(goal_sets.scalar_type() == at::kLong, "reward_head: goal_sets must be int64, got ",
                   goal_sets.scalar_type());
  TORCH_CHECK_VALUE(goal_sets.dim() == 2 && goal_sets.size(0) > 0 && goal_sets.size(1) > 0,
                    "reward_head: goal_sets must be a non-empty (G, 1 + N) tensor, got ", goal_sets.sizes());
  const auto device = image.device();
  TORCH_CHECK_VALUE(text.device() == device && goal_sets.device() == device,
                    "reward_head: tensors on different devices: image_embeddings ", device, ", text_embeddings ",
                    text.device(), ", goal_sets ", goal_sets.device());
  TORCH_CHECK_VALUE(std::isfinite(logit_scale) && logit_scale > 0, "reward_head: logit_scale must be positive and "
                    "finite, got ", logit_scale);
  TORCH_CHECK_VALUE(std::isfinite(threshold), "reward_head: threshold must be finite, got ", threshold);
  RewardHeadShape s;
  if (mode == "binary") s.mode = kBinary;
  else if (mode == "probability") s.mode = kProbability;
  else if (mode == "cosine") s.mode = kCosine;
  else TORCH_CHECK_VALUE(false, "reward_head: mode must be 'binary', 'probability' or 'cosine', got '", mode, "'");
  s.B = image.size(0);
  s.K = text.size(0);
  s.D = image.size(1);
  s.G = goal_sets.size(0);
  s.M = goal_sets.size(1);
  if (goal_ids.has_value()) {
    const at::Tensor& ids = *goal_ids;
    TORCH_CHECK_TYPE(ids.scalar_type() == at::kLong, "reward_head: goal_ids must be int64, got ", ids.scalar_type());
    TORCH_CHECK_VALUE(ids.dim() == 1 && ids.size(0) == s.B, "reward_head: goal_ids must be (B,) with B = ", s.B,
                      ", got ", ids.sizes());
    TORCH_CHECK_VALUE(ids.device() == device, "reward_head: goal_ids on ", ids.device(), ", embeddings on ", device);
    s.with_ids = true;
  }
  return s;
}

}  // namespace vlmreward
