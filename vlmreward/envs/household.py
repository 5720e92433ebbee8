"""Household-object domains (the paper's Find / Lift / Pick-and-Place) on MiniGrid.

Baumli et al. (arXiv 2312.09187, section 4) train agents to find, lift and place household objects from
language goals. Here a single MiniGrid room (``grid_size`` x ``grid_size`` cells, walls included) holds a
few objects, each a distinct (colour, type) pair over :data:`COLOURS` (8) x :data:`OBJECTS` (6), drawn by
:class:`HouseholdObject` (one silhouette per type). Every episode's goal objects are in the room, and the
distractors are biased to share a colour or a type with a goal object (:data:`CONFUSER_PROB`), so that a
goal is only met by the right combination. The observation IS the RGB frame a vision-language model
scores: the whole room from above (``view="room"``, the default) or the agent's egocentric view
(``view="egocentric"``, MiniGrid's 7 x 7 agent view, agent at the bottom centre facing up); highlight off,
the carried object drawn whole on the agent's cell with a small agent at its front edge (:func:`carrying_tile`).
The default is measured: at equal pretraining steps the reward
model learned every household family far faster from room frames, while a Find agent on ground-truth reward
learned faster from egocentric ones (docs/results/default_model.md).

Goal semantics (exact, from simulator state; BabyAI's verifier semantics, minigrid.envs.babyai.core.verifier):
- Find      "go to the {c} {o}":                 the object is in the cell the agent faces (GoToInstr).
- Lift      "pick up the {c} {o}":               the agent carries the object (PickupInstr).
- PickPlace "put the {c1} {o1} next to the {c2} {o2}": both objects on the floor, 4-adjacent (PutNextInstr;
  the relation is symmetric, so dropping o2 next to o1 also counts: the resulting frames are the same).
An absent object makes a goal False. Other wordings of the same goals: :mod:`vlmreward.envs.language`.

Train / held-out split (:data:`HELDOUT_PAIRS`, 8 of the 48 pairs, one per colour, at most two per type, so
that every colour keeps 5 and every type at least 6 training pairs): those pairs never appear in a training
goal (a PickPlace goal is held out when either of its objects is); they may still appear as distractors.
"""
from __future__ import annotations

import math
from itertools import permutations
from typing import Any

import numpy as np
from gymnasium import spaces
from minigrid.core.constants import DIR_TO_VEC
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.roomgrid import RoomGrid
from minigrid.core.world_object import Wall, WorldObj
from minigrid.utils.rendering import (downsample, fill_coords, point_in_circle, point_in_rect, point_in_triangle,
                                      rotate_fn)

#: RGB of each colour word (MiniGrid's six, plus orange and white).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (112, 39, 195),
    "yellow": (255, 255, 0), "grey": (100, 100, 100), "orange": (255, 140, 0), "white": (255, 255, 255)}
COLOURS: tuple[str, ...] = tuple(PALETTE)
OBJECTS: tuple[str, ...] = ("ball", "box", "key", "cup", "book", "ring")
PAIRS: tuple[tuple[str, str], ...] = tuple((c, o) for c in COLOURS for o in OBJECTS)
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "key"), ("green", "box"), ("blue", "ball"), ("purple", "cup"), ("yellow", "book"),
    ("grey", "ring"), ("orange", "ball"), ("white", "key")})
VIEWS = ("egocentric", "room")
#: Probability that a goal object gets a distractor of its colour (another type), and one of its type.
CONFUSER_PROB = 0.75

# Family -> (goal template, number of objects in a goal, actions: MiniGrid's Actions enum prefix).
# Find needs only turn/forward; Lift and PickPlace add pickup and drop (drop lets a wrong pick be undone).
# toggle is left out so boxes never open (and vanish), done is unused.
FAMILIES = {
    "find": ("go to the {} {}", 1, 3),
    "lift": ("pick up the {} {}", 1, 5),
    "pickplace": ("put the {} {} next to the {} {}", 2, 5),
}
LEFT, RIGHT, FORWARD, PICKUP, DROP = range(5)
#: State sampler: probabilities of (carrying an object, two floor objects 4-adjacent, agent facing an object)
#: per family. Carrying only where the action space has pickup (Find has none).
STATE_MIX = {"find": (0.0, 0.25, 0.5), "lift": (0.5, 0.25, 0.35), "pickplace": (0.3, 0.6, 0.3)}
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid's DIR_TO_VEC



class HouseholdObject(WorldObj):
    """A pickable household object of :data:`OBJECTS` in a colour of :data:`PALETTE`.

    MiniGrid's own Ball / Box / Key know six colours and three types; this class draws all six types in all
    eight colours, each type a silhouette that stays distinct at 12 px per cell (the default model's
    84-px input of a 7-cell view): ball = disc, box = square outline with a slit, key = shaft, teeth and
    bow, cup = open-topped beaker with a handle, book = filled block with a dark spine, ring = annulus.
    Raises ValueError for an unknown colour or type.
    """

    def __init__(self, colour: str, kind: str):
        if colour not in PALETTE or kind not in OBJECTS:
            raise ValueError(f"unknown household object {colour!r} {kind!r}; colours {COLOURS}, types {OBJECTS}")
        # WorldObj.__init__ only knows MiniGrid's own names; set its attributes directly
        self.type, self.color, self.contains, self.init_pos, self.cur_pos = kind, colour, None, None, None

    def can_pickup(self) -> bool:
        return True

    def encode(self) -> tuple[int, int, int]:
        # MiniGrid caches rendered tiles by this tuple; ids past MiniGrid's own (< 11) keep the keys apart
        return (100 + OBJECTS.index(self.type), 100 + COLOURS.index(self.color), 0)

    def render(self, img: np.ndarray) -> None:
        c, black = PALETTE[self.color], (0, 0, 0)
        kind = self.type
        if kind == "ball":
            fill_coords(img, point_in_circle(0.5, 0.5, 0.31), c)
        elif kind == "box":
            fill_coords(img, point_in_rect(0.12, 0.88, 0.12, 0.88), c)
            fill_coords(img, point_in_rect(0.20, 0.80, 0.20, 0.80), black)
            fill_coords(img, point_in_rect(0.16, 0.84, 0.46, 0.54), c)
        elif kind == "key":
            fill_coords(img, point_in_rect(0.50, 0.63, 0.31, 0.88), c)
            fill_coords(img, point_in_rect(0.36, 0.50, 0.58, 0.67), c)
            fill_coords(img, point_in_rect(0.36, 0.50, 0.79, 0.88), c)
            fill_coords(img, point_in_circle(0.56, 0.28, 0.19), c)
            fill_coords(img, point_in_circle(0.56, 0.28, 0.07), black)
        elif kind == "cup":
            fill_coords(img, point_in_rect(0.18, 0.30, 0.22, 0.84), c)
            fill_coords(img, point_in_rect(0.58, 0.70, 0.22, 0.84), c)
            fill_coords(img, point_in_rect(0.18, 0.70, 0.72, 0.84), c)
            fill_coords(img, point_in_rect(0.70, 0.88, 0.34, 0.44), c)
            fill_coords(img, point_in_rect(0.78, 0.88, 0.34, 0.66), c)
            fill_coords(img, point_in_rect(0.70, 0.88, 0.56, 0.66), c)
        elif kind == "book":
            fill_coords(img, point_in_rect(0.22, 0.78, 0.14, 0.86), c)
            fill_coords(img, point_in_rect(0.22, 0.34, 0.14, 0.86), tuple(v // 3 for v in c))
        else:  # ring
            fill_coords(img, point_in_circle(0.5, 0.5, 0.36), c)
            fill_coords(img, point_in_circle(0.5, 0.5, 0.20), black)


def goal_specs(family: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """All goals of a family, in a fixed order: goal text -> the (colour, type) pairs it names."""
    template, n, _ = FAMILIES[family]
    combos = [(p,) for p in PAIRS] if n == 1 else list(permutations(PAIRS, 2))
    return {template.format(*[w for p in combo for w in p]): combo for combo in combos}


def render_grid(grid: Grid, tile_size: int, agent_pos: tuple[int, int], agent_dir: int,
                carrying: WorldObj | None = None) -> np.ndarray:
    """``grid.render(tile_size, agent_pos, agent_dir)`` (MiniGrid, highlight off), uint8 (H*t, W*t, 3): the same
    tiles from MiniGrid's tile cache (``Grid.render_tile``), without the per-cell ``np.array_equal`` that makes
    MiniGrid's loop ~5x slower than the tiles themselves (tests compare the bytes with ``Grid.render``).
    ``carrying``: the agent's cell is :func:`carrying_tile` instead (the carried object whole, a small agent)."""
    agent, t = agent_pos[1] * grid.width + agent_pos[0], tile_size
    tiles = [Grid.render_tile(obj, agent_dir if k == agent else None, False, t) for k, obj in enumerate(grid.grid)]
    if carrying is not None:
        tiles[agent] = carrying_tile(carrying, agent_dir, t)
    img = np.empty((grid.height * t, grid.width * t, 3), np.uint8)  # cached tiles are float64: cast as MiniGrid
    img.reshape(grid.height, t, grid.width, t, 3)[:] = np.stack(tiles).reshape(
        grid.height, grid.width, t, t, 3).transpose(0, 2, 1, 3, 4)
    return img


def carrying_tile(obj: WorldObj, agent_dir: int, tile_size: int, subdivs: int = 3) -> np.ndarray:
    """The agent's cell while it carries ``obj``: the object's silhouette whole, the agent a small red triangle
    (black rim, so it stays apart from a red object) at the cell's front edge, pointing along ``agent_dir``.
    MiniGrid draws its full-size agent over the carried object, which hides most of the silhouette (at 12 px a
    cell the type of a carried object was hardly visible). Cached beside MiniGrid's tiles; uint8 (t, t, 3)."""
    key = ("carrying", *obj.encode(), agent_dir, tile_size)
    if key not in Grid.tile_cache:
        img = np.zeros((tile_size * subdivs, tile_size * subdivs, 3), np.uint8)
        fill_coords(img, point_in_rect(0, 0.031, 0, 1), (100, 100, 100))  # grid lines, as MiniGrid's tiles
        fill_coords(img, point_in_rect(0, 1, 0, 0.031), (100, 100, 100))
        obj.render(img)
        theta = 0.5 * math.pi * agent_dir
        for pts, colour in ((((0.68, 0.28), (1.0, 0.5), (0.68, 0.72)), (0, 0, 0)),
                            (((0.75, 0.36), (0.96, 0.5), (0.75, 0.64)), (255, 0, 0))):
            fill_coords(img, rotate_fn(point_in_triangle(*pts), cx=0.5, cy=0.5, theta=theta), colour)
        Grid.tile_cache[key] = downsample(img, subdivs)
    return Grid.tile_cache[key]


class HouseholdEnv(RoomGrid):
    """One MiniGrid room with household objects and a language goal.

    Args:
        family: "find" | "lift" | "pickplace".
        grid_size: room side in cells, walls included (>= 5).
        frame_size: side S of the square RGB observation in pixels; tiles are ``frame_size // grid_size``
            pixels and the grid is centred on a black canvas when S is not a multiple of ``grid_size``.
            The default reward model was trained on 224-pixel frames resized to its input: frames drawn
            natively smaller lower its precision (docs/environments.md).
        num_objects: objects in the room (goal objects + distractors), 2..(grid_size - 2)**2 // 3.
        view: "room" (the whole room from above) or "egocentric" (MiniGrid's 7 x 7 agent view, rotated so
            that the agent faces up).
        max_steps: episode length before truncation.
        max_attempts: None (the paper's task: pick and drop freely) or n >= 1: the episode ends (terminated,
            ``info["attempts_spent"]`` True) at the n-th pickup (Lift) or drop (PickPlace), right or wrong. The
            rule knows no goal, so it tells a VLM-rewarded learner nothing of the ground truth; it makes a
            wrong pick final (a learning aid: success within n attempts is a lower bound on success with
            free attempts, same goals). Find has no pickup: ValueError.
        goal_pool: goals that ``reset`` samples from (default ``train_goals``).
        heldout_distractors: True: any pair may be a distractor, held-out pairs included (the split's rule:
            never in a training caption). False: a held-out pair is in the room only as a goal object, so an
            agent trained on training goals never meets one (a strict zero-shot split; without it a Lift agent
            learns that held-out objects are never rewarded, docs/results/training.md).
        render_mode: None or "rgb_array": ``render()`` returns the room from above (the observation frame itself
            when ``view="room"``), so a reward model can score the room while the agent observes its own view.

    Observation: uint8 (S, S, 3) RGB frame. Reward: ``1 - 0.9 * steps / max_steps`` on success (MiniGrid),
    else 0; success terminates. ``info``: "goal" (str), "success" (bool, ground truth of the goal).
    Raises ValueError for unknown families, bad sizes, or a goal outside the task set.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    reward_style = "goal_reaching"  # the episode ends when the goal is reached (vlmreward.envs.DECLARATIONS)

    def __init__(self, family: str = "find", *, grid_size: int = 7, frame_size: int = 224, num_objects: int = 5,
                 view: str = "room", max_steps: int | None = None, goal_pool=None,
                 render_mode: str | None = None, max_attempts: int | None = None,
                 heldout_distractors: bool = True):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if grid_size < 5:
            raise ValueError(f"grid_size must be >= 5 (walls included), got {grid_size}")
        if frame_size < max(grid_size, 7):
            raise ValueError(f"frame_size ({frame_size}) must be >= the cells drawn across ({max(grid_size, 7)})")
        if not 2 <= num_objects <= min(len(PAIRS), (grid_size - 2) ** 2 // 3):
            raise ValueError(f"num_objects must be in [2, {(grid_size - 2) ** 2 // 3}] for grid_size {grid_size}, "
                             f"got {num_objects}")
        if max_attempts is not None and (family == "find" or int(max_attempts) < 1):
            raise ValueError(f"max_attempts must be None or >= 1, and Find has no pickup; got {max_attempts!r} "
                             f"for family {family!r}")
        self.family = family
        self.max_attempts = None if max_attempts is None else int(max_attempts)
        self.attempts = 0
        self.view = view
        self.frame_size = int(frame_size)
        self.num_objects = int(num_objects)
        self.heldout_distractors = bool(heldout_distractors)
        self._specs = goal_specs(family)
        self.task_set: tuple[str, ...] = tuple(self._specs)
        self._goal_index = {pairs: k for k, pairs in enumerate(self._specs.values())}
        self.train_goals = tuple(g for g, ps in self._specs.items() if not HELDOUT_PAIRS.intersection(ps))
        self.heldout_goals = tuple(g for g in self.task_set if g not in set(self.train_goals))
        self.goal_pool = self.train_goals if goal_pool is None else tuple(goal_pool)
        for g in self.goal_pool:
            self._check_goal(g)
        self.goal: str = self.goal_pool[0]
        steps = {"find": 50, "lift": 64, "pickplace": 100}[family] if max_steps is None else int(max_steps)
        super().__init__(mission_space=MissionSpace(mission_func=lambda: self.goal), room_size=grid_size,
                         num_rows=1, num_cols=1, max_steps=steps, render_mode=render_mode,
                         highlight=False, tile_size=self.frame_size // grid_size, agent_view_size=7)
        self.action_space = spaces.Discrete(FAMILIES[family][2])
        self.observation_space = spaces.Box(0, 255, (self.frame_size, self.frame_size, 3), np.uint8)
        self._frame = np.zeros((self.frame_size, self.frame_size, 3), np.uint8)

    # ----- goals -----------------------------------------------------------------------------------------
    def _check_goal(self, goal) -> None:
        if not isinstance(goal, str):
            raise TypeError(f"goal must be a str, got {type(goal).__name__}")
        if goal not in self._specs:
            raise ValueError(f"goal {goal!r} is not in the task set of the {self.family!r} family "
                             f"(e.g. {self.task_set[0]!r})")

    def _find(self, pair: tuple[str, str]):
        """Floor position of the object with this (colour, type), or None (carried or absent)."""
        for i in range(1, self.width - 1):
            for j in range(1, self.height - 1):
                cell = self.grid.get(i, j)
                if cell is not None and (cell.color, cell.type) == pair:
                    return i, j
        return None

    def goal_success(self, goal: str) -> bool:
        """Ground truth of ``goal`` (any goal of ``task_set``) in the current state; exact, see module doc.

        Raises TypeError / ValueError when ``goal`` is not a goal string of this environment's task set.
        """
        self._check_goal(goal)
        return bool(self.task_labels()[self._goal_index[self._specs[goal]]])

    def task_labels(self) -> np.ndarray:
        """bool (len(task_set),): the ground truth of every goal of the task set, from one scan of the room (a
        PickPlace task set has thousands of goals); ``goal_success`` reads its entry. Checked against BabyAI's
        verifiers and MiniGrid's grid encoding in the tests."""
        out = np.zeros(len(self.task_set), dtype=bool)
        index = self._goal_index
        if self.family != "pickplace":  # the one object carried (Lift) or faced (Find)
            obj = self.carrying if self.family == "lift" else self.grid.get(*(int(v) for v in self.front_pos))
            if obj is not None and ((obj.color, obj.type),) in index:
                out[index[((obj.color, obj.type),)]] = True
            return out
        floor = {}
        for i in range(1, self.width - 1):
            for j in range(1, self.height - 1):
                cell = self.grid.get(i, j)
                if cell is not None:
                    floor[(i, j)] = (cell.color, cell.type)
        for (i, j), a in floor.items():
            for dx, dy in _DIRS:
                b = floor.get((i + dx, j + dy))
                if b is not None and (a, b) in index:
                    out[index[(a, b)]] = True
        return out

    # ----- sub-goals (potential-based shaping, vlmreward.wrappers.SubgoalShaping) -----------------------
    @property
    def subgoal_task_set(self) -> tuple[str, ...]:
        """The goals sub-goals are drawn from: Lift's task set for PickPlace (an object must be carried to be
        placed), () for Find and Lift."""
        return tuple(goal_specs("lift")) if self.family == "pickplace" else ()

    @property
    def subgoal_negatives(self) -> tuple[str, ...]:
        """Extra negatives of a sub-goal reward: Find's goals, which describe the frames where nothing is carried
        (without them a softmax over Lift goals alone puts its mass on the faced object's goal)."""
        return tuple(goal_specs("find")) if self.family == "pickplace" else ()

    def subgoals(self, goal: str | None = None) -> tuple[str, ...]:
        """Sub-goals of ``goal`` (default: the episode's), strings of :attr:`subgoal_task_set`: for "put the A
        next to the B", "pick up the A" and "pick up the B" (either object may be carried to the other).
        Raises TypeError / ValueError for a goal outside the task set."""
        goal = self.goal if goal is None else goal
        self._check_goal(goal)
        lift = FAMILIES["lift"][0]
        return tuple(lift.format(*p) for p in self._specs[goal]) if self.family == "pickplace" else ()

    def subgoal_success(self) -> bool:
        """Ground truth of the episode goal's sub-goals: the agent carries one of its objects (PickPlace);
        always False for Find and Lift."""
        c = self.carrying
        return (self.family == "pickplace" and c is not None
                and (c.color, c.type) in self._specs[self.goal])

    # ----- episode ---------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options and options.get("goal") is not None:
            self._check_goal(options["goal"])
            self._next_goal = options["goal"]
        else:
            self._next_goal = None
        obs, _ = super().reset(seed=seed)
        self.attempts = 0
        return obs, {"goal": self.goal, "success": False, "attempts_spent": False}

    def _gen_grid(self, width, height):
        goal = self._next_goal or self.goal_pool[int(self.np_random.integers(len(self.goal_pool)))]
        self._check_goal(goal)  # goal_pool may be set from outside (vector wrappers use set_attr)
        self.goal = self.mission = goal
        need = list(self._specs[goal])
        from vlmreward.envs.expert import solvable  # planner shared with the expert

        while True:  # rejection sampling: goal not already met at the start, and reachable
            super()._gen_grid(width, height)
            self.agent_pos = (-1, -1)  # RoomGrid parks the agent mid-room; free that cell for objects
            for colour, kind in need + self._distractors(need):
                self.place_obj(HouseholdObject(colour, kind))
            self.place_agent()
            self.carrying = None
            if not self.goal_success(goal) and solvable(self):
                return

    def _distractors(self, need) -> list[tuple[str, str]]:
        """``num_objects - len(need)`` other pairs: per goal object, with probability :data:`CONFUSER_PROB`
        each, one of its colour and one of its type (a goal's words then only fit the goal object), the
        rest uniform."""
        rng, room = self.np_random, self.num_objects - len(need)
        others = [p for p in PAIRS if p not in need and (self.heldout_distractors or p not in HELDOUT_PAIRS)]
        picks: list[tuple[str, str]] = []
        for colour, kind in need:
            for shares in (lambda p: p[0] == colour, lambda p: p[1] == kind):
                pool = [p for p in others if shares(p) and p not in picks]
                if pool and rng.random() < CONFUSER_PROB:
                    picks.append(pool[int(rng.integers(len(pool)))])
        rng.shuffle(picks)
        picks = picks[:room]
        rest = [p for p in others if p not in picks]
        return picks + [rest[k] for k in rng.permutation(len(rest))[: room - len(picks)]]

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, {self.action_space.n}), got {action!r}")
        held = self.carrying
        obs, _, _, truncated, _ = super().step(int(action))
        # an attempt: what the agent holds changed by its own pickup (Lift) or drop (PickPlace)
        commit = PICKUP if self.family == "lift" else DROP
        if int(action) == commit and held is not self.carrying:
            self.attempts += 1
        spent = self.max_attempts is not None and self.attempts >= self.max_attempts
        success = self.goal_success(self.goal)
        reward = self._reward() if success else 0.0
        return obs, float(reward), success or spent, truncated, {"goal": self.goal, "success": success,
                                                                  "attempts_spent": spent}

    # ----- randomised states (datasets) ------------------------------------------------------------------
    def sample_states(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` frames of randomised states, each in a freshly generated room, for datasets.

        Episode frames are few and strongly correlated (a goal holds on ~1 frame per expert episode); these
        states cover every relation the goals name, at a known rate (:data:`STATE_MIX`): the agent on a random
        free cell facing a random direction or facing an object, an object carried (drawn on the agent's cell),
        two objects moved next to each other. Every state is one the environment can reach (objects are only
        moved between floor cells and the hand). Labels are ``goal_success`` of the task set.
        Returns (frames uint8 (n,S,S,3), labels bool (n, len(task_set))).
        """
        p_carry, p_adj, p_face = STATE_MIX[self.family]
        rng = np.random.default_rng(seed)
        self.reset(seed=seed)  # one seed, then the env's own generator: no overlap with other splits' seeds
        frames, labels = [], []
        inner = range(1, self.width - 1)
        for _ in range(n):
            self.reset()
            self.agent_pos = (-1, -1)  # objects may move onto the agent's old cell; the agent is placed last
            objs = [self.grid.get(i, j) for i in inner for j in inner if self.grid.get(i, j) is not None]
            if rng.random() < p_carry:
                o = objs.pop(int(rng.integers(len(objs))))
                self.grid.set(*o.cur_pos, None)
                o.cur_pos, self.carrying = (-1, -1), o
            placed = False
            if len(objs) >= 2 and rng.random() < p_adj:
                a, b = rng.choice(len(objs), 2, replace=False)
                bx, by = objs[b].cur_pos
                spots = [(bx + dx, by + dy) for dx, dy in _DIRS if self.grid.get(bx + dx, by + dy) is None]
                if spots:
                    x, y = spots[int(rng.integers(len(spots)))]
                    self.grid.set(*objs[a].cur_pos, None)
                    self.grid.set(x, y, objs[a])
                    objs[a].cur_pos = (x, y)
                    placed = True
            cells = [(i, j) for i in inner for j in inner if self.grid.get(i, j) is None]
            facing = []
            if objs and rng.random() < p_face:
                # after a placement, face one of the pair half the time (in view in the egocentric frame)
                pick = rng.choice([a, b]) if placed and rng.random() < 0.5 else rng.integers(len(objs))
                o = objs[int(pick)]
                facing = [((o.cur_pos[0] - dx, o.cur_pos[1] - dy), d) for d, (dx, dy) in enumerate(_DIRS)
                          if self.grid.get(o.cur_pos[0] - dx, o.cur_pos[1] - dy) is None]
            if facing:
                self.agent_pos, self.agent_dir = facing[int(rng.integers(len(facing)))]
            else:
                self.agent_pos, self.agent_dir = cells[int(rng.integers(len(cells)))], int(rng.integers(4))
            self.agent_pos = tuple(int(v) for v in self.agent_pos)
            frames.append(self.gen_obs())
            labels.append(self.task_labels())
        return np.stack(frames), np.array(labels, dtype=bool)

    # ----- frames ----------------------------------------------------------------------------------------
    def gen_obs(self):
        """The observation: a fresh frame of ``view`` (rendered once per step; ``render`` reuses it in the room
        view and draws the room anew in the egocentric one)."""
        self._frame = self._draw(self.view)
        return self._frame.copy()

    def _draw(self, view: str) -> np.ndarray:
        if view == "egocentric":
            # MiniGrid's agent view (cells it cannot see, e.g. behind walls, left empty), its carried object on
            # the agent's cell; drawn without the visibility highlight, like the room view
            v = self.agent_view_size
            return self._fit(render_grid(self._view_grid(), self.frame_size // v, (v // 2, v - 1), 3, self.carrying))
        pos = (int(self.agent_pos[0]), int(self.agent_pos[1]))
        return self._fit(render_grid(self.grid, self.tile_size, pos, self.agent_dir, self.carrying))

    def _view_grid(self) -> Grid:
        """``self.gen_obs_grid()[0]`` (MiniGrid's agent view: cells out of sight emptied, the carried object on
        the agent's cell) built in one pass: view cell (x, y), agent at (v//2, v-1) facing up, shows world cell
        agent + (v-1-y) * forward + (x - v//2) * right; MiniGrid's slice and rotations make a Grid each
        (tests compare the encodings)."""
        v = self.agent_view_size
        (ax, ay), (fx, fy) = self.agent_pos, DIR_TO_VEC[self.agent_dir]
        rx, ry = -fy, fx
        cells, wall, w, h = self.grid.grid, Wall(), self.grid.width, self.grid.height
        view = Grid(v, v)
        for y in range(v):
            for x in range(v):
                wx = ax + (v - 1 - y) * fx + (x - v // 2) * rx
                wy = ay + (v - 1 - y) * fy + (x - v // 2) * ry
                view.grid[y * v + x] = cells[wy * w + wx] if 0 <= wx < w and 0 <= wy < h else wall
        view.process_vis(agent_pos=(v // 2, v - 1))
        view.set(v // 2, v - 1, self.carrying)
        return view

    def _fit(self, img: np.ndarray) -> np.ndarray:
        """Centre a rendered grid on a black (S, S, 3) canvas when S is not a multiple of the cell count."""
        if img.shape[0] == self.frame_size:
            return img
        out = np.zeros((self.frame_size, self.frame_size, 3), np.uint8)
        o = (self.frame_size - img.shape[0]) // 2
        out[o:o + img.shape[0], o:o + img.shape[1]] = img
        return out

    def render(self):
        """The room from above, uint8 (S, S, 3), when ``render_mode == "rgb_array"``; None otherwise."""
        if self.render_mode == "rgb_array":
            return (self._frame if self.view == "room" else self._draw("room")).copy()
        return None
