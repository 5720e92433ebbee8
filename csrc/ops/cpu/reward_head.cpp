// CPU kernel of the reward_head op: after the (B,K) cosine matmul, one pass per frame computes its K shared
// exponentials and every requested goal's probability and reward (reward_head_math.h).
#include "../reward_head.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include <vector>

namespace vlmreward {

std::tuple<at::Tensor, at::Tensor> reward_head_cpu(const at::Tensor& image, const at::Tensor& text,
                                                   const at::Tensor& goal_sets, double logit_scale, double threshold,
                                                   const std::optional<at::Tensor>& goal_ids, std::string_view mode) {
  TORCH_CHECK_VALUE(image.device().is_cpu(), "reward_head: the CPU kernel got tensors on ", image.device());
  const RewardHeadInputs in = prepare_reward_head(image, text, goal_sets, logit_scale, threshold, goal_ids, mode);
  const int64_t B = in.cos.size(0), K = in.cos.size(1), M = in.goal_sets.size(1);
  const bool per_frame_goal = in.goal_ids.defined();
  const int64_t cols = in.cols;
  const double* cos = in.cos.data_ptr<double>();
  const int64_t* sets = in.goal_sets.data_ptr<int64_t>();
  const int64_t* ids = per_frame_goal ? in.goal_ids.data_ptr<int64_t>() : nullptr;
  float* p_out = in.probs.data_ptr<float>();
  float* r_out = in.rewards.data_ptr<float>();
  at::parallel_for(0, B, std::max<int64_t>(1, 4096 / (K + cols * M)), [&](int64_t begin, int64_t end) {
    std::vector<double> exps(K);
    for (int64_t b = begin; b < end; ++b) {
      const double* row = cos + b * K;
      row_exps(row, K, logit_scale, exps.data());
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t* set = sets + (per_frame_goal ? ids[b] : c) * M;
        const double p = goal_probability(row, exps.data(), logit_scale, set, M);
        p_out[b * cols + c] = static_cast<float>(p);
        r_out[b * cols + c] = reward_from(in.mode, p, row[set[0]], threshold);
      }
    }
  });
  return {in.probs, in.rewards};
}

}  // namespace vlmreward
