"""Sub-goals of the household environments, SubgoalShaping (potential-based, Ng et al. 1999) and TerminalReward,
against values recomputed by hand from the simulator state over the same rollouts."""
import gymnasium as gym
import numpy as np
import pytest
import torch

import vlmreward  # noqa: F401
from vlmreward.config import ConfigError
from vlmreward.envs import expert_action
from vlmreward.envs.household import OBJECTS, goal_specs
from vlmreward.goals import GoalBank
from vlmreward.models import DEFAULT_MODEL_DIR
from vlmreward.reward import RewardModel
from vlmreward.rl import ppo, runlog
from vlmreward.rl.task import Task, make_envs
from vlmreward.wrappers import SubgoalShaping, TerminalReward, VectorVLMRewardWrapper

PICKPLACE = "vlmreward/PickPlace-v0"
SMALL = {"frame_size": 70}


def _carried_goal_object(base) -> bool:
    """Independent of HouseholdEnv.subgoal_success: parse the goal string's two objects."""
    w = base.goal.split()  # put the {c1} {o1} next to the {c2} {o2}
    objects = {(w[2], w[3]), (w[7], w[8])}
    return base.carrying is not None and (base.carrying.color, base.carrying.type) in objects


def test_pickplace_subgoals_are_the_lift_goals_of_its_objects():
    env = gym.make(PICKPLACE, **SMALL)
    env.reset(seed=3)
    base = env.unwrapped
    assert base.subgoals("put the red ball next to the blue key") == ("pick up the red ball", "pick up the blue key")
    assert set(base.subgoal_task_set) == set(goal_specs("lift")) and len(base.subgoal_negatives) == 48
    assert set(base.subgoals()) <= set(base.subgoal_task_set) and len(base.subgoals()) == 2
    assert not base.subgoal_success()  # nothing carried at the start
    for family in ("Find", "Lift"):
        other = gym.make(f"vlmreward/{family}-v0", **SMALL).unwrapped
        assert other.subgoal_task_set == () and other.subgoals() == () and not other.subgoal_success()
    with pytest.raises(ValueError, match="task set"):
        base.subgoals("pick up the red ball")
    # carrying: true for either goal object, false for a distractor
    objects = [c for c in base.grid.grid if c is not None and c.type in OBJECTS]
    seen = set()
    for obj in objects:
        base.carrying = obj
        seen.add(base.subgoal_success())
        assert base.subgoal_success() == _carried_goal_object(base)
    assert seen == {True, False}


def _drive(envs, steps, epsilon, seed):
    """Expert actions with probability 1 - epsilon per sub-env, else random (a NEXT_STEP reset step ignores it)."""
    rng = np.random.default_rng(seed)
    subs = envs.unwrapped.envs
    for _ in range(steps):
        yield np.array([expert_action(e) if rng.random() > epsilon else int(rng.integers(5)) for e in subs])


def test_subgoal_shaping_ground_truth_equals_hand_computed_potentials():
    n, coef, gamma = 3, 0.5, 0.9
    envs = SubgoalShaping(gym.make_vec(PICKPLACE, num_envs=n, max_attempts=1, max_episode_steps=25, **SMALL),
                          coef, gamma)
    envs.reset(seed=4)
    subs = [e.unwrapped for e in envs.unwrapped.envs]
    phi, reset_step = np.zeros(n), np.zeros(n, bool)
    ups = downs = successes = 0
    for actions in _drive(envs, 150, 0.3, seed=0):
        _, reward, term, trunc, info = envs.step(actions)
        now = np.array([_carried_goal_object(b) for b in subs], float)
        now[reset_step] = 0.0  # a reset frame: nothing carried either way
        expected = np.where(reset_step, 0.0, info["env_reward"] + coef * (gamma * np.where(term, 0.0, now) - phi))
        np.testing.assert_allclose(reward, expected)
        np.testing.assert_array_equal(info["subgoal"], now.astype(bool))
        ups += int(np.sum((now > phi) & ~reset_step))
        downs += int(np.sum((now < phi) & ~reset_step))
        successes += int(np.sum(info["success"]))
        phi, reset_step = now, term | trunc
    assert ups >= 5 and downs >= 3 and successes >= 2  # picks, drops and placements all happened


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "open_clip_config.json").is_file(), reason="no default model")
def test_subgoal_shaping_from_the_default_model_agrees_with_ground_truth():
    """The VLM's sub-goal (Lift goals of the goal's objects, Find's goals as extra negatives, beta 0.3 as
    configs/lift.yaml) on the rendered room against the simulator's carried object."""
    model = vlmreward.load_model("default")
    lift, find = list(goal_specs("lift")), list(goal_specs("find"))
    rm = RewardModel(model, GoalBank(model, lift, negatives=lift + find), threshold=0.3, fire_check_frames=0)
    envs = SubgoalShaping(gym.make_vec(PICKPLACE, num_envs=4, max_attempts=1, max_episode_steps=30,
                                       render_mode="rgb_array"), 0.5, 0.99, reward_model=rm)
    envs.reset(seed=11)
    subs = [e.unwrapped for e in envs.unwrapped.envs]
    vlm, truth, reset_step = [], [], np.zeros(4, bool)
    for actions in _drive(envs, 60, 0.2, seed=1):
        _, _, term, trunc, info = envs.step(actions)
        live = ~reset_step
        vlm += list(info["subgoal"][live])
        truth += [_carried_goal_object(b) for b, a in zip(subs, live) if a]
        reset_step = term | trunc
    vlm, truth = np.array(vlm), np.array(truth)
    assert truth.sum() >= 10 and (~truth).sum() >= 10
    assert np.mean(vlm == truth) >= 0.95, (np.mean(vlm[truth]), np.mean(~vlm[~truth]))


def test_subgoal_shaping_refuses_environments_without_subgoals():
    with pytest.raises(ValueError, match="no sub-goals"):
        SubgoalShaping(gym.make_vec("vlmreward/Lift-v0", num_envs=2, **SMALL), 0.5, 0.99)
    with pytest.raises(ValueError, match="gamma"):
        SubgoalShaping(gym.make_vec(PICKPLACE, num_envs=2, **SMALL), 0.5, 0.0)
    with pytest.raises(ValueError, match="render_mode"):
        SubgoalShaping(gym.make_vec(PICKPLACE, num_envs=2, **SMALL), 0.5, 0.99, reward_model=object())


def test_terminal_reward_keeps_the_environments_own_ends_only(tiny_model):
    """Lift with max_attempts 1: the first pickup terminates, a 6-step timeout truncates; only terminal frames keep
    their reward, against the same rollout without the wrapper."""
    bank = GoalBank(tiny_model, gym.make("vlmreward/Lift-v0", **SMALL).unwrapped.task_set)
    rm = RewardModel(tiny_model, bank, threshold=1.0, fire_check_frames=0)

    def rollout(wrap):
        envs = VectorVLMRewardWrapper(gym.make_vec("vlmreward/Lift-v0", num_envs=4, max_episode_steps=6, max_attempts=1,
                                                   **SMALL), rm, terminate_on_success=False, score_all_goals=True)
        envs = wrap(envs)
        envs.reset(seed=2)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(40):
            _, r, term, trunc, info = envs.step(rng.integers(0, 5, 4))
            out.append((r, term, trunc, info["vlm_reward"], info["vlm_success_all"], info["vlm_probs_all"],
                        info["vlm_prob"]))
        return out

    rm.threshold = float(np.median([p for *_, p in rollout(lambda e: e)]))  # half the frames fire
    plain, ours = rollout(lambda e: e), rollout(TerminalReward)
    fired = {"terminated": 0, "truncated": 0, "other": 0}
    for (r0, te0, tr0, v0, s0, p0, _), (r1, te1, tr1, v1, s1, p1, _) in zip(plain, ours):
        np.testing.assert_array_equal(te0, te1)
        np.testing.assert_array_equal(tr0, tr1)
        np.testing.assert_array_equal(r1, np.where(te0, r0, 0.0))
        np.testing.assert_array_equal(v1, np.where(te0, v0, 0.0))
        np.testing.assert_array_equal(s1, s0 & te0[:, None])
        np.testing.assert_array_equal(p1, p0)  # probabilities are measurements: kept for hindsight onset
        fired["terminated"] += int(np.sum(r0[te0]))
        fired["truncated"] += int(np.sum(r0[tr0]))
        fired["other"] += int(np.sum(r0[~te0 & ~tr0]))
    assert min(fired.values()) > 0, fired  # every kind of frame fired in the plain rollout


def test_trainer_settings(tiny_clip_dir, tmp_path):
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="no sub-goals"):
        Task(ppo.Args(model=str(tiny_clip_dir), subgoal_coef=0.5), cpu)
    with pytest.raises(ConfigError, match="termination"):
        ppo.Args(reward_at="termination", terminate_on_success=True).check()
    with pytest.raises(ConfigError, match="reward_at"):
        ppo.Args(reward_at="end").check()
    with pytest.raises(ConfigError, match="subgoal"):
        ppo.Args(subgoal_coef=-1.0).check()
    # termination: VLM success ends no episode, and the ground truth still does not (NoSuccessTermination)
    task = Task(ppo.Args(model=str(tiny_clip_dir), reward_at="termination", threshold=1.0), cpu, fire_check=False)
    assert not task.terminate_on_success
    envs = make_envs(task, 2, task.train_goals)
    envs.reset(seed=0)
    gt_hits = 0
    for actions in _drive(envs, 60, 0.0, seed=0):
        _, _, term, _, info = envs.step(actions % 3)
        gt_hits += int(np.sum(info["gt_success"]))
        assert not np.any(term)
    assert gt_hits >= 2
    # a short run with both: the sub-goal rate is logged, the shaped return differs from the VLM return
    args = ppo.Args(env_id=PICKPLACE, model=str(tiny_clip_dir), threshold=0.02, reward_at="termination",
                    max_attempts=1, subgoal_coef=0.5, subgoal_threshold=0.02, total_timesteps=256, num_envs=4,
                    num_steps=32, max_episode_steps=12, eval_episodes=1, progress=False, frame_size=70,
                    run_dir=str(tmp_path / "run"), hindsight_coef=1.0)
    ppo.train(args)
    m = runlog.read_metrics(tmp_path / "run" / "metrics.csv")
    rate = m["shaping/subgoal_rate"][1]
    assert len(rate) == 2 and np.all((rate >= 0) & (rate <= 1))


def test_vlm_subgoals_share_the_goal_rewards_image_tower_pass(tiny_clip_dir):
    """Under --reward vlm the sub-goal model scores the frames the goal reward just scored: one tower pass a step."""
    args = ppo.Args(env_id=PICKPLACE, model=str(tiny_clip_dir), threshold=0.02, reward_at="termination",
                    max_attempts=1, subgoal_coef=0.5, subgoal_threshold=0.02, frame_size=70, hindsight_coef=1.0)
    task = Task(args, torch.device("cpu"), fire_check=False)
    assert task.subgoal_model.model is task.reward_model.model and task.reward_model.model.reuse_last_images
    passes = []
    task.reward_model.model.model.visual.register_forward_hook(lambda *a: passes.append(1))
    envs = make_envs(task, 3, task.train_goals, training=True)
    envs.reset(seed=0)
    rng, steps = np.random.default_rng(0), 0
    for _ in range(12):
        _, _, term, trunc, info = envs.step(rng.integers(0, 5, 3))
        steps += 1
        assert len(passes) <= steps and "subgoal" in info
    assert len(passes) >= steps - 2  # steps where every sub-env resets score nothing
    envs.close()
