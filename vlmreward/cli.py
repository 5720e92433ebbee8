"""The ``vlmreward`` command line: one sub-command per job, each defined in its own module.

Each module named below exposes ``add_arguments(parser)`` and ``run(args) -> int``. A user error (bad flag
or config value, unknown id, missing or corrupt file) prints one line and exits with status 2; ``--debug`` (or
``VLMREWARD_DEBUG=1``) shows the traceback instead. Flags must be spelt out (no abbreviations).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "pretrain": ("vlmreward.pretrain.train", "train the embedded default CLIP on the project's environments"),
    "evaluate": ("vlmreward.evaluation", "offline evaluation of a reward model: precision-recall against ground truth"),
    "train": ("vlmreward.rl.ppo", "train a language-conditioned PPO agent on VLM rewards"),
    "evaluate-agent": ("vlmreward.rl.evaluate", "ground-truth success of a trained agent on training and held-out goals"),
    "enjoy": ("vlmreward.rl.video", "record a GIF/MP4 of a trained agent"),
}
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               ImportError, ConnectionError)


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags (``--num-env`` must not mean ``--num-envs``); errors in one line, exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    parser = _Parser(prog="vlmreward", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
        if name == chosen:  # import only the module that runs: keeps `vlmreward --help` fast
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("VLMREWARD_DEBUG", "") not in ("", "0")
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except USER_ERRORS as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"vlmreward {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
