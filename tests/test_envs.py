"""The five registered environments: gymnasium's checker, ground truth against independent references
(BabyAI's instruction verifier, MiniGrid's grid encoding, gymnasium's own termination), experts, frames."""
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc, PickupInstr, PutNextInstr

import vlmreward  # noqa: F401  (registers the ids)
from vlmreward.envs import ENV_IDS, HELDOUT_PAIRS, expert_action
from vlmreward.envs.household import COLOURS, DROP, OBJECTS, PAIRS, PALETTE, PICKUP, HouseholdObject

HOUSEHOLD = ("vlmreward/Find-v0", "vlmreward/Lift-v0", "vlmreward/PickPlace-v0")
SMALL = {"frame_size": 70}  # 10-pixel tiles where the frame itself is not under test (cheaper rendering)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert info["goal"] in env.unwrapped.train_goals and info["success"] == env.unwrapped.goal_success(info["goal"])
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3
    if env_id in HOUSEHOLD:
        assert obs.shape == (224, 224, 3) and np.array_equal(obs, frame)  # the observation IS the frame


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_task_set_split(env_id):
    base = gym.make(env_id).unwrapped
    train, held = set(base.train_goals), set(base.heldout_goals)
    assert train and not train & held and train | held == set(base.task_set)
    assert len(set(base.task_set)) == len(base.task_set)
    if env_id not in HOUSEHOLD:  # classic control: >= 3 training goals, every region a training goal
        assert len(train) >= 3 and not held
    else:
        assert held
        for goal in base.train_goals:  # no held-out colour-object pair in any training goal
            assert not any(f"{c} {o}" in goal for c, o in HELDOUT_PAIRS)
        for goal in base.heldout_goals:
            assert any(f"{c} {o}" in goal for c, o in HELDOUT_PAIRS)
    goals = {base.reset(seed=s)[1]["goal"] for s in range(30)}
    assert goals <= train


def _instr(env):
    """BabyAI's own verifier for the episode's goal (an independent implementation of the semantics)."""
    base = env.unwrapped
    descs = []
    for c, o in base._specs[base.goal]:
        d = ObjDesc(None)  # BabyAI's descriptor asserts its own six colours and three types; it matches by name
        d.type, d.color = o, c
        descs.append(d)
    instr = {"find": GoToInstr, "lift": PickupInstr, "pickplace": PutNextInstr}[base.family](*descs)
    instr.reset_verifier(base)
    return instr


@pytest.mark.parametrize("env_id", HOUSEHOLD)
def test_success_matches_babyai_verifier(env_id):
    """Over random, expert and partly-random play, the env's success signal and reward equal BabyAI's verdict."""
    env = gym.make(env_id, **SMALL)
    rng = np.random.default_rng(0)
    seen = {True: 0, False: 0}
    for ep, p_expert in enumerate([0.0] * 6 + [1.0] * 6 + [0.6] * 6):
        obs, info = env.reset(seed=100 + ep)
        instr, base = _instr(env), env.unwrapped
        anchor = base.grid.get(*base._find(base._specs[base.goal][-1])) if base.family == "pickplace" else None
        anchor_moved = False
        done = False
        while not done:
            action = expert_action(env) if rng.random() < p_expert else int(env.action_space.sample())
            obs, reward, terminated, truncated, info = env.step(action)
            verdict = instr.verify(action) == "success"
            anchor_moved |= anchor is not None and base.carrying is anchor
            if not anchor_moved:  # BabyAI's PutNext tracks the fixed object's start cell only
                assert info["success"] == verdict
            assert terminated == info["success"]
            assert reward == pytest.approx(1 - 0.9 * base.step_count / base.max_steps if verdict else 0.0) \
                or anchor_moved
            seen[info["success"]] += 1
            done = terminated or truncated
    assert seen[True] >= 6 and seen[False] > 50


def _reference_success(base, goal, enc):
    """Ground truth from MiniGrid's grid encoding ``enc`` (W, H, [type, colour, state]) and the carried object."""
    pairs = base._specs[goal]

    def cells(pair):
        c, o = pair
        code = HouseholdObject(c, o).encode()
        return {tuple(p) for p in np.argwhere((enc[..., 0] == code[0]) & (enc[..., 1] == code[1]))}

    if base.family == "lift":
        return base.carrying is not None and base.carrying.encode() == HouseholdObject(*pairs[0]).encode()
    if base.family == "find":
        return tuple(int(v) for v in base.front_pos) in cells(pairs[0])
    return any(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a in cells(pairs[0]) for b in cells(pairs[1]))


@pytest.mark.parametrize("env_id", HOUSEHOLD)
def test_goal_success_for_every_goal(env_id):
    env = gym.make(env_id, **SMALL)
    base = env.unwrapped
    positives = 0
    for ep in range(3):
        env.reset(seed=ep)
        for t in range(20):
            env.step(expert_action(env) if t % 3 else int(env.action_space.sample()))
            enc = base.grid.encode()
            np.testing.assert_array_equal(base.task_labels(), [base.goal_success(g) for g in base.task_set])
            for goal in base.task_set:
                truth = base.goal_success(goal)
                assert truth == _reference_success(base, goal, enc), goal
                positives += truth
    assert positives > 0


@pytest.mark.parametrize("env_id", HOUSEHOLD)
def test_expert_reaches_train_and_heldout_goals(env_id):
    env = gym.make(env_id, **SMALL)
    base = env.unwrapped
    goals = base.train_goals[:4] + base.heldout_goals[:4]
    for i, goal in enumerate(goals):
        env.reset(seed=i, options={"goal": goal})
        assert base.goal == goal and not base.goal_success(goal)
        for c, o in base._specs[goal]:  # the goal's objects are in the room
            assert base._find((c, o)) is not None
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(expert_action(env))
            done = terminated or truncated
        assert info["success"], goal
        assert base.step_count <= {"find": 12, "lift": 14, "pickplace": 30}[base.family]


@pytest.mark.parametrize("view", ["egocentric", "room"])
def test_carried_object_is_visible(view):
    env = gym.make("vlmreward/Lift-v0", render_mode="rgb_array", view=view)
    obs, _ = env.reset(seed=3)
    base = env.unwrapped
    colour = base._specs[base.goal][0][0]
    done = False
    while not done:
        action = expert_action(env)
        obs, _, done, _, _ = env.step(action)
    assert base.carrying is not None and action == PICKUP
    ts = base.tile_size
    x, y = base.agent_pos if view == "room" else (3, 6)  # egocentric: the agent at the bottom centre
    tile = obs[y * ts:(y + 1) * ts, x * ts:(x + 1) * ts].reshape(-1, 3)
    assert np.any(np.all(tile == PALETTE[colour], axis=-1))  # the carried object's colour is in the agent's cell
    if view == "room":
        assert np.array_equal(obs, env.render())


def test_render_is_the_room_from_above_in_every_view():
    """render() shows the room from above in both views (what a reward model scores with frame_source
    "render" while the agent observes its egocentric view): equal to a room-view twin's observation."""
    ego = gym.make("vlmreward/Lift-v0", render_mode="rgb_array", view="egocentric")
    room = gym.make("vlmreward/Lift-v0", render_mode="rgb_array", view="room")
    obs_e, _ = ego.reset(seed=5)
    obs_r, _ = room.reset(seed=5)
    assert not np.array_equal(obs_e, obs_r) and np.array_equal(ego.render(), obs_r)
    for _ in range(12):
        action = expert_action(room)
        obs_e, *_ = ego.step(action)
        obs_r, _, done, _, _ = room.step(action)
        assert np.array_equal(ego.render(), obs_r)
        if done:
            break
    assert done


def test_frame_size_and_grid_size_configurable():
    env = gym.make("vlmreward/Find-v0", grid_size=6, frame_size=100, num_objects=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (100, 100, 3) and env.observation_space.contains(obs)
    assert env.unwrapped.tile_size == 16


def test_bad_input_household():
    env = gym.make("vlmreward/Find-v0")
    with pytest.raises(ValueError, match="task set"):
        env.reset(options={"goal": "go to the pink elephant"})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="task set"):
        env.unwrapped.goal_success("pick up the red ball")  # a Lift goal is not a Find goal
    with pytest.raises(TypeError):
        env.unwrapped.goal_success(3)
    with pytest.raises(ValueError, match="family"):
        gym.make("vlmreward/Find-v0", family="cook")
    with pytest.raises(ValueError, match="grid_size"):
        gym.make("vlmreward/Find-v0", grid_size=3)
    with pytest.raises(ValueError, match="action"):
        env.unwrapped.step(DROP)  # Find has no drop action


def test_cartpole_ground_truth_matches_gymnasium_termination():
    env = gym.make("vlmreward/CartPoleUpright-v0")
    base = env.unwrapped
    fallen = 0
    for ep in range(20):
        env.reset(seed=ep)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(int(env.action_space.sample()))
            x, _, theta, _ = base.state
            if terminated and abs(x) <= 2.4:  # gymnasium ended it on the angle (> 12 degrees): a lean we name
                side = "left" if theta < 0 else "right"
                assert base.goal_success(f"the pole is leaning to the {side}")
            assert base.goal_success("the pole is leaning to the left") == (theta < -8 * math.pi / 180)
            assert base.goal_success("the pole is leaning to the right") == (theta > 8 * math.pi / 180)
            assert info["success"] == (abs(theta) <= 6 * math.pi / 180)
            fallen += terminated
    assert fallen == 20


def test_classic_experts():
    env = gym.make("vlmreward/CartPoleUpright-v0")
    for goal in ("the pole is upright", "the cart is on the right side of the track",
                 "the pole is leaning to the left"):
        env.reset(seed=1, options={"goal": goal})
        hits = []
        for _ in range(500):
            _, _, terminated, truncated, info = env.step(expert_action(env))
            hits.append(info["success"])
            if terminated or truncated:
                break
        assert any(hits[-20:]), goal
    assert len(hits) < 500  # falling on purpose ends the episode
    env = gym.make("vlmreward/MountainCarFlag-v0")
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(expert_action(env))
        done = terminated or truncated
    assert terminated and info["success"] and env.unwrapped.state[0] >= 0.5


def test_mountaincar_textured_rendering():
    plain = gym.make("vlmreward/MountainCarFlag-v0", render_mode="rgb_array")
    textured = gym.make("vlmreward/MountainCarFlag-v0", render_mode="rgb_array", textured=True)
    plain.reset(seed=0)
    textured.reset(seed=0)
    a, b = plain.render(), textured.render()
    assert a.shape == b.shape == (400, 600, 3)
    white = np.all(a == 255, axis=-1)
    assert white.mean() > 0.5 and not np.all(b == 255, axis=-1).any()
    assert np.array_equal(a[~white], b[~white])  # car, track and flag unchanged
    sky, ground = b[10, 300], b[390, 300]
    assert sky[2] > sky[1] and ground[1] > ground[2]  # blue above, green/brown below
    assert np.array_equal(b, textured.render())


def test_bad_input_classic():
    env = gym.make("vlmreward/MountainCarFlag-v0")
    with pytest.raises(ValueError, match="task set"):
        env.reset(options={"goal": "the pole is upright"})
    with pytest.raises(ValueError, match="task set"):
        gym.make("vlmreward/CartPoleUpright-v0", goal_pool=["fly"])


@pytest.mark.parametrize("env_id,relation_rate", [("vlmreward/Find-v0", 0.5), ("vlmreward/Lift-v0", 0.5),
                                                   ("vlmreward/PickPlace-v0", 0.6)])
def test_household_states_cover_the_relations(env_id, relation_rate):
    env = gym.make(env_id, render_mode="rgb_array")
    u = env.unwrapped
    frames, labels = u.sample_states(200, seed=5)
    assert frames.shape == (200, 224, 224, 3) and labels.shape == (200, len(u.task_set))
    assert len({f.tobytes() for f in frames}) > 190  # a fresh room (or at least a fresh state) each time
    any_true = labels.any(1).mean()
    if u.family != "pickplace":  # one faced cell / one carried object: at most one goal holds
        assert labels.sum(1).max() == 1
    assert relation_rate - 0.15 < any_true < relation_rate + 0.3, any_true
    # the last state is a legal one: agent on an empty floor cell, the carried object off the grid
    x, y = u.agent_pos
    assert 0 < x < u.width - 1 and 0 < y < u.height - 1 and u.grid.get(x, y) is None
    if u.carrying is not None:
        assert all(u.grid.get(i, j) is not u.carrying for i in range(u.width) for j in range(u.height))
    np.testing.assert_array_equal(labels[-1], [u.goal_success(g) for g in u.task_set])
    env.close()


def test_every_environment_declares_its_reward_style_and_family():
    from vlmreward.envs import (DECLARATIONS, GOAL_REACHING, PER_STEP, check_env_id, declaration, ends_on_success,
                                family, reward_style)
    assert set(DECLARATIONS) == set(ENV_IDS)
    for env_id in ENV_IDS:
        env = gym.make(env_id)
        assert reward_style(env) == declaration(env_id).reward_style == reward_style(env_id)
        assert env_id.split("/")[1].startswith(family(env_id))
        assert callable(env.unwrapped.sample_states)
        env.close()
    assert reward_style("vlmreward/CartPoleUpright-v0") == PER_STEP and not ends_on_success("vlmreward/MountainCarFlag-v0")
    assert reward_style(gym.make("CartPole-v1")) == GOAL_REACHING  # declares nothing: the paper's default
    with pytest.raises(ValueError, match="did you mean.*Find-v0"):
        check_env_id("vlmreward/Fnd-v0")
    with pytest.raises(ValueError, match="not a vlmreward environment"):
        declaration("CartPole-v1")


def test_household_domain_v2_split_is_compositional():
    """>= 8 colours x 6 types; ~15-20% of the pairs held out, every colour and type still in >= 4 training
    pairs; a PickPlace goal is held out exactly when one of its objects is."""
    from vlmreward.envs.household import goal_specs
    assert len(COLOURS) >= 8 and len(OBJECTS) >= 6 and len(PAIRS) == len(COLOURS) * len(OBJECTS)
    train_pairs = [p for p in PAIRS if p not in HELDOUT_PAIRS]
    assert 0.15 <= len(HELDOUT_PAIRS) / len(PAIRS) <= 0.20 and HELDOUT_PAIRS <= set(PAIRS)
    for c in COLOURS:
        assert sum(p[0] == c for p in train_pairs) >= 4, c
    for o in OBJECTS:
        assert sum(p[1] == o for p in train_pairs) >= 4, o
    base = gym.make("vlmreward/PickPlace-v0").unwrapped
    specs = goal_specs("pickplace")
    for goal in base.task_set:
        assert (goal in base.heldout_goals) == any(p in HELDOUT_PAIRS for p in specs[goal])


def test_every_type_is_a_distinct_silhouette_at_model_resolution():
    """At 12 px per cell (a 7-cell view at 84 px), every type's mask differs from every other's in >= 8 pixels
    and every (colour, type) tile is unique."""
    from minigrid.core.grid import Grid
    from PIL import Image

    def tile(c, o):
        full = Grid.render_tile(HouseholdObject(c, o), tile_size=32).astype(np.uint8)
        return np.asarray(Image.fromarray(full).resize((12, 12), Image.BICUBIC))
    masks = {o: tile("white", o).max(-1) > 96 for o in OBJECTS}
    for i, a in enumerate(OBJECTS):
        for b in OBJECTS[i + 1:]:
            assert (masks[a] != masks[b]).sum() >= 8, (a, b)
    assert len({tile(c, o).tobytes() for c, o in PAIRS}) == len(PAIRS)
    with pytest.raises(ValueError, match="unknown household object"):
        HouseholdObject("pink", "ball")


def test_distractors_usually_share_the_goal_objects_colour_or_type():
    env = gym.make("vlmreward/Find-v0", **SMALL)
    base, shares = env.unwrapped, 0
    for seed in range(100):
        env.reset(seed=seed)
        c, o = base._specs[base.goal][0]
        objs = [x for x in base.grid.grid if x is not None and x.type != "wall"]
        assert len(objs) == base.num_objects
        shares += any((x.color == c) != (x.type == o) for x in objs)  # same colour other type, or vice versa
    assert shares >= 85


@pytest.mark.parametrize("env_id", HOUSEHOLD)
def test_heldout_distractors_false_keeps_heldout_pairs_to_goal_objects(env_id):
    """heldout_distractors=False: a held-out pair is in the room only as a goal object (training goals: never);
    by default held-out pairs are frequent distractors of training goals (the test would fail if the option did
    nothing)."""
    def heldout_in_room(env, goal, seed):
        env.reset(seed=seed, options={"goal": goal})
        return {(x.color, x.type) for x in env.unwrapped.grid.grid
                if x is not None and x.type != "wall"} & HELDOUT_PAIRS

    strict, default = gym.make(env_id, heldout_distractors=False, **SMALL), gym.make(env_id, **SMALL)
    base = strict.unwrapped
    train, heldout = base.train_goals, base.heldout_goals
    seen = 0
    for seed in range(60):
        assert not heldout_in_room(strict, train[seed % len(train)], seed)
        seen += bool(heldout_in_room(default, train[seed % len(train)], seed))
        goal = heldout[seed % len(heldout)]
        assert heldout_in_room(strict, goal, seed) == HELDOUT_PAIRS.intersection(base._specs[goal])
    assert seen >= 15


def test_egocentric_view_puts_the_faced_cell_in_front_of_the_agent():
    """In the egocentric frame the agent sits at the bottom centre facing up, so the cell it faces (what a Find
    goal names) is always tile (3, 5) of the 7 x 7 view, whichever way the agent is turned."""
    env = gym.make("vlmreward/Find-v0", view="egocentric")
    base = env.unwrapped
    seen_dirs = set()
    for seed in range(12):
        env.reset(seed=seed)
        done = False
        while not done:
            obs, _, done, truncated, info = env.step(expert_action(env))
            done = done or truncated
        assert info["success"]
        seen_dirs.add(base.agent_dir)
        ts = base.frame_size // 7
        colour = base._specs[base.goal][0][0]
        tile = obs[5 * ts:6 * ts, 3 * ts:4 * ts].reshape(-1, 3)
        assert np.any(np.all(tile == PALETTE[colour], axis=-1))
    assert len(seen_dirs) >= 3
    room = gym.make("vlmreward/Find-v0", view="room")
    assert room.reset(seed=0)[0].shape == env.reset(seed=0)[0].shape
    with pytest.raises(ValueError, match="view"):
        gym.make("vlmreward/Find-v0", view="fisheye")


@pytest.mark.parametrize("view", ["room", "egocentric"])
def test_frames_equal_minigrid_grid_render(view):
    """The household frames come from render_grid (MiniGrid's tiles, without its per-cell loop overhead): the
    same bytes as MiniGrid's own Grid.render, for the room and the egocentric grid, along random episodes."""
    from minigrid.core.grid import Grid
    from vlmreward.envs.household import render_grid

    env = gym.make("vlmreward/Lift-v0", view=view, frame_size=84)
    base = env.unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=1)
    checked = 0
    for _ in range(60):
        obs, _, term, trunc, _ = env.step(int(rng.integers(base.action_space.n)))
        if view == "room":
            x, y = base.agent_pos
            base.grid.set(x, y, base.carrying)
            grid, pos, d = base.grid, (x, y), base.agent_dir
        else:
            grid, _ = base.gen_obs_grid()
            pos, d = (3, 6), 3
        want = grid.render(84 // 7, pos, d, highlight_mask=None)
        got = render_grid(grid, 84 // 7, pos, d)
        if view == "room":
            base.grid.set(x, y, None)
        assert isinstance(grid, Grid) and got.dtype == np.uint8 and np.array_equal(got, want)
        assert np.array_equal(obs, want)
        checked += 1
        if term or trunc:
            env.reset(seed=int(rng.integers(1000)))
    assert checked == 60


def test_egocentric_grid_equals_minigrid_gen_obs_grid():
    """The egocentric view's grid (one pass over the view) encodes exactly as MiniGrid's gen_obs_grid (slice,
    rotations, visibility, carried object) in every direction, next to walls and while carrying."""
    env = gym.make("vlmreward/Lift-v0", view="egocentric")
    base = env.unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=2)
    dirs, carried = set(), 0
    for _ in range(300):
        _, _, term, trunc, _ = env.step(int(rng.integers(base.action_space.n)))
        want, _ = base.gen_obs_grid()
        assert np.array_equal(base._view_grid().encode(), want.encode())
        dirs.add(base.agent_dir)
        carried += base.carrying is not None
        if term or trunc:
            env.reset(seed=int(rng.integers(1000)))
    assert dirs == {0, 1, 2, 3} and carried > 0


def test_a_carried_object_is_drawn_whole_with_a_small_agent_pointing_ahead():
    """MiniGrid's full-size agent hid much of a carried object; carrying_tile keeps most of every silhouette
    (all but a small agent at the cell's front edge), and the agent still points where it faces."""
    from minigrid.core.grid import Grid
    from vlmreward.envs.household import OBJECTS, HouseholdObject, carrying_tile
    t = 12  # 84 px frames of a 7 x 7 room
    empty = Grid.render_tile(None, None, False, t).astype(int)
    for kind in OBJECTS:
        obj = HouseholdObject("orange", kind)  # not the agent's red: MiniGrid's agent would not blend in
        own = Grid.render_tile(obj, None, False, t).astype(int)
        silhouette = np.abs(own - empty).sum(-1) > 30
        kept = lambda img: (np.abs(img.astype(int) - own).sum(-1) < 30)[silhouette].mean()  # noqa: E731
        new = np.mean([kept(carrying_tile(obj, d, t)) for d in range(4)])
        old = np.mean([kept(Grid.render_tile(obj, d, False, t)) for d in range(4)])
        assert new > 0.75 and new > old + 0.1, (kind, new, old)
        for d, (fx, fy) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):
            cell = carrying_tile(obj, d, t).astype(int)
            ys, xs = np.nonzero((cell[..., 0] > 200) & (cell[..., 1] < 60) & (cell[..., 2] < 60))
            centre = (t - 1) / 2
            assert len(xs) and (xs.mean() - centre) * fx + (ys.mean() - centre) * fy > 0.25 * t


@pytest.mark.parametrize("view", ["room", "egocentric"])
def test_household_frames_draw_the_carried_object_with_carrying_tile(view):
    from vlmreward.envs.household import HouseholdObject, carrying_tile
    env = gym.make("vlmreward/Lift-v0", frame_size=84, view=view).unwrapped
    env.reset(seed=3)
    env.carrying = HouseholdObject("purple", "book")
    t = env.tile_size if view == "room" else 84 // env.agent_view_size
    x, y = env.agent_pos if view == "room" else (env.agent_view_size // 2, env.agent_view_size - 1)
    frame = env._draw(view)
    tile = carrying_tile(env.carrying, env.agent_dir if view == "room" else 3, t).astype(np.uint8)  # as MiniGrid casts
    assert frame.shape == (84, 84, 3) and (frame[y * t:(y + 1) * t, x * t:(x + 1) * t] == tile).all()
    env.carrying = None
    assert (env._draw(view) != frame).any()


def _face(base, pair):
    """Puts the agent on a free cell facing the floor object ``pair``; returns False when no side is free."""
    x, y = base._find(pair)
    for d, (dx, dy) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1))):
        if base.grid.get(x - dx, y - dy) is None:
            base.agent_pos, base.agent_dir = (x - dx, y - dy), d
            return True
    return False


@pytest.mark.parametrize("family", ["lift", "pickplace"])
def test_max_attempts_ends_the_episode_at_the_first_commit_right_or_wrong(family):
    from vlmreward.wrappers import NoSuccessTermination

    env_id = {"lift": "vlmreward/Lift-v0", "pickplace": "vlmreward/PickPlace-v0"}[family]
    # right: the expert's first commit succeeds and spends the attempt; under a VLM reward the termination stays
    env = NoSuccessTermination(gym.make(env_id, max_attempts=1, **SMALL))
    for seed in range(3):
        env.reset(seed=seed)
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(expert_action(env))
            done = terminated or truncated
        assert terminated and info["success"] and info["attempts_spent"]
    # wrong: a distractor picked (Lift) or dropped (PickPlace) ends the episode without success
    for limit in (1, None):
        env = gym.make(env_id, max_attempts=limit, **SMALL)
        base = env.unwrapped
        env.reset(seed=5)
        goal_pairs = set(base._specs[base.goal])
        wrong = next(p for p in PAIRS if p not in goal_pairs and base._find(p) is not None and _face(base, p))
        _, _, terminated, _, info = env.step(PICKUP)
        assert base.carrying is not None and (base.carrying.color, base.carrying.type) == wrong
        if family == "pickplace":
            assert not terminated and not info["attempts_spent"]  # a pickup is no PickPlace attempt
            _, _, terminated, _, info = env.step(DROP)
            assert base.carrying is None
        assert info["success"] == base.goal_success(base.goal)
        assert info["attempts_spent"] == (limit is not None) and terminated == (limit is not None or info["success"])
    with pytest.raises(ValueError, match="max_attempts"):
        gym.make("vlmreward/Find-v0", max_attempts=1)
    with pytest.raises(ValueError, match="max_attempts"):
        gym.make(env_id, max_attempts=0)
