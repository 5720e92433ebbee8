"""Draws the household domain's pictures in docs/img: every (colour, type) pair in one room, and one episode
in both views. Run: python docs/examples/household_pictures.py"""
import numpy as np
from PIL import Image, ImageDraw

import vlmreward  # noqa: F401  (registers the ids)
from vlmreward.envs import expert_action
from vlmreward.envs.household import COLOURS, HELDOUT_PAIRS, OBJECTS, HouseholdEnv, HouseholdObject


def catalogue(path="docs/img/household_objects.png", tile=32):
    """A 10 x 10 room (8 x 8 inside): row = colour, column = type; held-out pairs framed in white."""
    env = HouseholdEnv("find", grid_size=10, frame_size=10 * tile, num_objects=2, view="room")
    env.reset(seed=0)
    for i in range(1, 9):
        for j in range(1, 9):
            env.grid.set(i, j, None)
    for r, c in enumerate(COLOURS):
        for k, o in enumerate(OBJECTS):
            env.grid.set(1 + k, 1 + r, HouseholdObject(c, o))
    env.agent_pos, env.agent_dir = (8, 8), 2
    img = Image.fromarray(env.gen_obs())
    draw = ImageDraw.Draw(img)
    for r, c in enumerate(COLOURS):
        for k, o in enumerate(OBJECTS):
            if (c, o) in HELDOUT_PAIRS:
                x, y = (1 + k) * tile, (1 + r) * tile
                draw.rectangle([x + 1, y + 1, x + tile - 2, y + tile - 2], outline=(255, 255, 255))
    img.save(path)


def views(path="docs/img/household_views.png", family="pickplace", seed=4, steps=6):
    """The first frames of one expert episode, egocentric (top row) and the whole room (bottom row)."""
    rows = []
    for view in ("egocentric", "room"):
        env = HouseholdEnv(family, view=view)
        frames = [env.reset(seed=seed)[0]]
        for _ in range(steps - 1):
            frames.append(env.step(expert_action(env))[0])
        rows.append(np.concatenate(frames, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    return env.goal


if __name__ == "__main__":
    catalogue()
    print("episode goal:", views())
