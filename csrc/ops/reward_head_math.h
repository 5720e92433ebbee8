// Per-(frame, goal) arithmetic of the reward_head op's CUDA kernels (the CPU kernel vectorises the same
// steps in cpu/reward_head.cpp).
//
// Baumli et al. (arXiv 2312.09187), eq. 1: p(l | o) = softmax over L = {goal} + negatives of
// logit_scale * cos(f(o), g(l')), taken at the goal; eq. 2: reward = 1[p > threshold].
#pragma once

#include <cmath>
#include <cstdint>

#include "hd.h"

namespace vlmreward {

enum RewardMode : int { kBinary = 0, kProbability = 1, kCosine = 2 };

// exps[k] = exp(scale * cos[k] - max_k scale * cos[k]) for one frame: K exponentials shared by all goals.
VLM_HD void row_exps(const double* cos, int64_t K, double scale, double* exps) {
  double m = -INFINITY;
  for (int64_t k = 0; k < K; ++k) m = fmax(m, scale * cos[k]);
  for (int64_t k = 0; k < K; ++k) exps[k] = exp(scale * cos[k] - m);
}

// Whether a goal_sets row indexes K texts (entries in [-1, K), -1 = padding, the goal itself not padding).
VLM_HD bool valid_set(const int64_t* set, int64_t set_len, int64_t K) {
  if (set[0] < 0) return false;
  for (int64_t i = 0; i < set_len; ++i)
    if (set[i] < -1 || set[i] >= K) return false;
  return true;
}

// Probability of the goal set[0] within its set (entries < 0 are padding). Fast path: sums of the row's
// shared exponentials. If the goal's term underflowed (the set lies far below the row's best logit), the
// set is recomputed against its own maximum, so tiny probabilities keep full relative precision.
VLM_HD double goal_probability(const double* cos, const double* exps, double scale, const int64_t* set,
                               int64_t set_len) {
  const int64_t goal = set[0];
  double sum = 0.0;
  for (int64_t i = 0; i < set_len; ++i)
    if (set[i] >= 0) sum += exps[set[i]];
  if (exps[goal] > 1e-200) return exps[goal] / sum;
  double m = -INFINITY;
  for (int64_t i = 0; i < set_len; ++i)
    if (set[i] >= 0) m = fmax(m, scale * cos[set[i]]);
  sum = 0.0;
  for (int64_t i = 0; i < set_len; ++i)
    if (set[i] >= 0) sum += exp(scale * cos[set[i]] - m);
  return exp(scale * cos[goal] - m) / sum;
}

VLM_HD float reward_from(int mode, double prob, double goal_cos, double threshold) {
  if (mode == kProbability) return static_cast<float>(prob);
  if (mode == kCosine) return static_cast<float>(goal_cos);
  // eq. 2, strictly greater, on the float32 p the op returns: rewards == (probs > threshold) exactly, also
  // when a threshold was calibrated to one of those p values
  return static_cast<double>(static_cast<float>(prob)) > threshold ? 1.f : 0.f;
}

}  // namespace vlmreward
