"""The VLM reward wrappers as gymnasium citizens: gymnasium's own env checker (render and close checks included,
which re-create the env from its spec), re-creation from ``env.spec``, and where the scored frame comes from
(``frame_source``), with a real (tiny, random-weight) open_clip model and real environments."""
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from minigrid.wrappers import ImgObsWrapper

import vlmreward  # noqa: F401
from vlmreward.goals import GoalBank
from vlmreward.reward import RewardModel
from vlmreward.wrappers import VectorVLMRewardWrapper, VLMRewardWrapper
from conftest import RecordingRewardModel

FIND = "vlmreward/Find-v0"
CARTPOLE = "vlmreward/CartPoleUpright-v0"
SMALL = {"frame_size": 70}



class FlippedObservation(gym.ObservationWrapper):
    """Observation = the frame upside down, so that the observation and render() differ."""

    def observation(self, observation):
        return np.ascontiguousarray(observation[::-1])


@pytest.fixture(scope="module")
def find_rm(tiny_model):
    return RewardModel(tiny_model, GoalBank(tiny_model, gym.make(FIND, **SMALL).unwrapped.task_set,
                                            num_negatives=5), threshold=1.0)


@pytest.fixture(scope="module")
def cartpole_rm(tiny_model):
    return RewardModel(tiny_model, GoalBank(tiny_model, gym.make(CARTPOLE).unwrapped.task_set), threshold=1.0)


@pytest.fixture(scope="module")
def minigrid_rm(tiny_model):
    goals = ["get to the green goal square", "a grey wall", "a red triangle"]
    return RewardModel(tiny_model, GoalBank(tiny_model, goals), threshold=1.0)


@pytest.mark.parametrize("env_id, kwargs", [(FIND, SMALL), (CARTPOLE, {"render_mode": "rgb_array"})])
def test_check_env_passes_with_render_and_close_checks(env_id, kwargs, find_rm, cartpole_rm):
    rm = find_rm if env_id == FIND else cartpole_rm
    env = VLMRewardWrapper(gym.make(env_id, **kwargs), rm, terminate_on_success=False)
    check_env(env)  # skip_render_check=False, skip_close_check=False: re-creates the env from env.spec


def test_spec_recreates_the_wrapped_env(find_rm):
    env = VLMRewardWrapper(gym.make(FIND, **SMALL), find_rm, terminate_on_success=False, goal_embedding=True)
    wrapper_spec = env.spec.additional_wrappers[-1]
    assert wrapper_spec.entry_point == "vlmreward.wrappers:VLMRewardWrapper"
    assert wrapper_spec.kwargs["reward_model"] is find_rm  # by reference: the model is not copied
    again = gym.make(env.spec)
    assert isinstance(again, VLMRewardWrapper) and again.observation_space == env.observation_space
    assert not again.terminate_on_success and again.goal_embedding
    obs_a, _ = env.reset(seed=4)
    obs_b, _ = again.reset(seed=4)
    for action in (0, 2, 1, 2):
        obs_a, r_a, *_, info_a = env.step(action)
        obs_b, r_b, *_, info_b = again.step(action)
        assert np.array_equal(obs_a["observation"], obs_b["observation"]) and obs_a["goal_id"] == obs_b["goal_id"]
        assert r_a == r_b and info_a["vlm_prob"] == pytest.approx(info_b["vlm_prob"], abs=1e-6)


def test_vector_wrapper_records_its_arguments(find_rm):
    env = VectorVLMRewardWrapper(gym.make_vec(FIND, 2, **SMALL), find_rm, score_all_goals=True,
                                 frame_source="observation")
    kwargs = env._saved_kwargs
    assert kwargs["reward_model"] is find_rm and kwargs["score_all_goals"] and kwargs["frame_source"] == "observation"
    again = VectorVLMRewardWrapper(gym.make_vec(FIND, 2, **SMALL), **kwargs)
    assert again.single_observation_space == env.single_observation_space and again.score_all_goals


def test_frame_source_observation_render_auto(find_rm):
    """Observation flipped upside down: each source hands the reward model its own frame."""
    expected = {"auto": "observation", "observation": "observation", "render": "render"}
    for source, kind in expected.items():
        rm = RecordingRewardModel(find_rm)
        env = VLMRewardWrapper(FlippedObservation(gym.make(FIND, **SMALL, render_mode="rgb_array")), rm,
                               frame_source=source)
        env.reset(seed=0)
        for action in (2, 0, 2):
            obs, *_ = env.step(action)
            frame = obs["observation"] if kind == "observation" else env.render()
            assert not np.array_equal(obs["observation"], env.render())
            assert np.array_equal(rm.frames[-1], frame[None]), source
        assert len(rm.frames) == 3 and env.frame_source == source


def test_frame_source_vector(find_rm):
    for source in ("observation", "render"):
        rm = RecordingRewardModel(find_rm)
        env = VectorVLMRewardWrapper(gym.make_vec(FIND, 2, **SMALL, render_mode="rgb_array",
                                                  wrappers=[FlippedObservation]), rm, frame_source=source)
        env.reset(seed=0)
        obs, *_ = env.step(np.array([2, 0]))
        frames = obs["observation"] if source == "observation" else np.stack(env.render())
        assert np.array_equal(rm.frames[-1], frames) and not np.array_equal(frames[:, ::-1], frames)


def test_frame_source_state_observations(cartpole_rm):
    rm = RecordingRewardModel(cartpole_rm)
    env = VLMRewardWrapper(gym.make(CARTPOLE, render_mode="rgb_array"), rm)  # auto: a state vector is no frame
    assert env.metadata["render_modes"] == ["rgb_array"]
    env.reset(seed=0)
    env.step(1)
    assert np.array_equal(rm.frames[-1], env.unwrapped.render()[None]) and rm.frames[-1].shape == (1, 400, 600, 3)
    with pytest.raises(ValueError, match="frame_source='observation' needs uint8"):
        VLMRewardWrapper(gym.make(CARTPOLE, render_mode="rgb_array"), cartpole_rm, frame_source="observation")
    with pytest.raises(ValueError, match="frame_source='render' needs .*render_mode='rgb_array'"):
        VLMRewardWrapper(gym.make(FIND, **SMALL), cartpole_rm, frame_source="render")
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        VectorVLMRewardWrapper(gym.make_vec(CARTPOLE, 2), cartpole_rm)
    with pytest.raises(ValueError, match="frame_source must be one of"):
        VLMRewardWrapper(gym.make(CARTPOLE, render_mode="rgb_array"), cartpole_rm, frame_source="pixels")


def test_minigrid_grid_encoding_is_not_scored_silently(minigrid_rm):
    """MiniGrid's ImgObsWrapper observation, uint8 (7, 7, 3) of object / colour / state indices, has the dtype and
    shape of an RGB frame; "auto" warns and names frame_source='render', which scores the rendered picture."""
    def make():
        return ImgObsWrapper(gym.make("MiniGrid-Empty-5x5-v0", render_mode="rgb_array"))

    goal = "get to the green goal square"
    obs, _ = make().reset(seed=0)
    assert obs.shape == (7, 7, 3) and obs.dtype == np.uint8 and obs.max() <= 10  # not a picture
    with pytest.warns(UserWarning, match="frame_source='render'"):
        VLMRewardWrapper(make(), minigrid_rm, goal=goal)
    with pytest.warns(UserWarning, match="frame_source='render'"):
        VectorVLMRewardWrapper(gym.vector.SyncVectorEnv([make, make]), minigrid_rm, goal=goal)
    rm = RecordingRewardModel(minigrid_rm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fix and an explicit "observation" do not warn
        env = VLMRewardWrapper(make(), rm, goal=goal, frame_source="render")
        VLMRewardWrapper(make(), minigrid_rm, goal=goal, frame_source="observation")
    env.reset(seed=0)
    obs, *_ = env.step(2)
    assert obs["observation"].shape == (7, 7, 3)
    assert rm.frames[-1].shape == (1, 160, 160, 3) and np.array_equal(rm.frames[-1][0], env.render())
