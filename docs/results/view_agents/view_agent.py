"""Find on its ground-truth reward from each household view (the agent side of the view decision).
The trainer has no view flag; this measurement script adds the view to the env kwargs."""
import json, sys
import torch
import vlmreward  # noqa: F401
from vlmreward import config
import vlmreward.rl.task as task_mod
from vlmreward.rl import ppo
view, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
orig = task_mod._env_kwargs
task_mod._env_kwargs = lambda args, frame_size: {**orig(args, frame_size), "view": view}
values = config.load_config(ppo.Args, config.resolve_config_path("find_gt"))
args = ppo.Args(**{**values, "total_timesteps": steps, "run_dir": out, "progress": False, "eval_interval": 25})
res = ppo.train(args)
print(view, json.dumps(res["eval"]))
