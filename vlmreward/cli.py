"""The ``vlmreward`` command line: one sub-command per job, each defined in its own module.

Each module named below exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "pretrain": ("vlmreward.pretrain.train", "train the embedded default CLIP on the project's environments"),
    "evaluate": ("vlmreward.evaluation", "offline evaluation of a reward model: precision-recall against ground truth"),
    "train": ("vlmreward.ppo", "train a language-conditioned PPO agent on VLM rewards"),
    "enjoy": ("vlmreward.rollout", "record a GIF/MP4 of a trained agent"),
}


def main(argv=None) -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    parser = argparse.ArgumentParser(prog="vlmreward", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that runs: keeps `vlmreward --help` fast
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
