"""Scripted experts for every vlmreward environment: ``expert_action(env) -> int``.

Household domains: a breadth-first planner over (x, y, direction) states with the turn/forward actions,
then the interaction (pickup / drop); shortest paths, so it reaches the goal whenever it is reachable,
from any state (also after random play, e.g. by first dropping a wrongly carried object).
CartPole: a linear state-feedback balancing controller. MountainCar: energy pumping (push along the
velocity). Used to label datasets and as an upper bound for agents.
"""
from __future__ import annotations

from collections import deque

from vlmreward.envs.household import DROP, FORWARD, LEFT, PICKUP, RIGHT, HouseholdEnv

_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid's DIR_TO_VEC


def _plan(env: HouseholdEnv, is_target) -> int | None:
    """First action of a shortest turn/forward path to a state (pos, dir) with ``is_target(front_cell_xy)``.

    Returns -1 when the current state is a target, None when no target is reachable.
    """
    start = (int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir))
    first = {start: -1}
    queue = deque([start])
    while queue:
        x, y, d = state = queue.popleft()
        if is_target((x + _DIRS[d][0], y + _DIRS[d][1])):
            return first[state]
        fx, fy = x + _DIRS[d][0], y + _DIRS[d][1]
        moves = [((x, y, (d - 1) % 4), LEFT), ((x, y, (d + 1) % 4), RIGHT)]
        if env.grid.get(fx, fy) is None:
            moves.append(((fx, fy, d), FORWARD))
        for nxt, action in moves:
            if nxt not in first:
                first[nxt] = action if first[state] == -1 else first[state]
                queue.append(nxt)
    return None


def _empty(env: HouseholdEnv, xy) -> bool:
    return 0 < xy[0] < env.width - 1 and 0 < xy[1] < env.height - 1 and env.grid.get(*xy) is None


def _next_to(a, b) -> bool:
    return abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1


def _household_action(env: HouseholdEnv) -> int:
    pairs = env._specs[env.goal]
    carried = None if env.carrying is None else (env.carrying.color, env.carrying.type)
    if env.family == "find" or (env.family != "find" and carried is None):
        where = env._find(pairs[0])
        act = None if where is None else _plan(env, lambda f: f == where)
        if act == -1:
            return PICKUP if env.family != "find" else LEFT  # Find: already facing it (episode ended)
    elif env.family == "lift" and carried == pairs[0]:
        return LEFT  # goal met
    elif env.family == "pickplace" and carried in pairs:
        anchor = env._find(pairs[1] if carried == pairs[0] else pairs[0])
        act = None if anchor is None else _plan(env, lambda f: _empty(env, f) and _next_to(f, anchor))
        if act == -1:
            return DROP
    else:  # carrying the wrong object: put it down first
        act = _plan(env, lambda f: _empty(env, f))
        if act == -1:
            return DROP
    return LEFT if act is None else act  # unreachable: turn (random play may have boxed the goal in)


def solvable(env: HouseholdEnv) -> bool:
    """Whether the planner reaches ``env.goal`` from the current state (used to reject start layouts)."""
    pairs = env._specs[env.goal]
    first = env._find(pairs[0])
    if first is None or _plan(env, lambda f: f == first) is None:
        return False
    if len(pairs) == 1:
        return True
    anchor = env._find(pairs[1])
    obj = env.grid.get(*first)
    env.grid.set(*first, None)  # picture the first object picked up
    try:
        return anchor is not None and _plan(env, lambda f: _empty(env, f) and _next_to(f, anchor)) is not None
    finally:
        env.grid.set(*first, obj)


def _cartpole_action(env) -> int:
    x, x_dot, theta, theta_dot = env.state
    goal = env.goal
    if goal.endswith("leaning to the left"):
        return 1  # accelerating the cart right tips the pole left
    if goal.endswith("leaning to the right"):
        return 0
    target = -1.5 if "left side" in goal else 1.5 if "right side" in goal else 0.0
    # Linear feedback (hand-tuned LQR-like gains): balance the pole, drift the cart towards ``target``.
    u = 10.0 * theta + 2.0 * theta_dot + 0.3 * (x - target) + 0.6 * x_dot
    return int(u > 0)


def _mountaincar_action(env) -> int:
    position, velocity = env.state
    if env.goal.endswith("bottom of the valley"):
        return 0 if velocity > 0 else 2  # damp the swing
    return 2 if velocity >= 0 else 0  # pump energy: push along the velocity


def expert_action(env) -> int:
    """An action of the scripted expert towards ``env.unwrapped.goal`` (any vlmreward environment).

    Args:
        env: a vlmreward environment (possibly wrapped), after ``reset``.
    Returns:
        int action in ``env.action_space``.
    Raises:
        TypeError: ``env`` is not a vlmreward environment.
    """
    from vlmreward.envs.classic import CartPoleUpright, MountainCarFlag

    base = env.unwrapped
    if isinstance(base, HouseholdEnv):
        return int(_household_action(base))
    if isinstance(base, CartPoleUpright):
        return _cartpole_action(base)
    if isinstance(base, MountainCarFlag):
        return _mountaincar_action(base)
    raise TypeError(f"expert_action supports vlmreward environments only, got {type(base).__name__}")
