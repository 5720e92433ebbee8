"""The README's reward-model example runs as written (offline, on the embedded default model)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_reward_model_example_runs(capsys):
    text = README.read_text()
    section = text[text.index("## Reward model in five lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "RewardOutput(probs=tensor([" in out
