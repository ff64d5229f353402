"""The code on the documentation pages runs (quickstart against the bundled model)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(capsys):
    blocks = python_blocks("quickstart.md")
    assert len(blocks) >= 5
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "docs/quickstart.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "torch.Size([1, 8, 4, 8, 8, 16])" in out
    assert "torch.Size([1, 1, 4, 64, 64])" in out
    assert (scope["out"] / "samples.png").stat().st_size > 0
    assert (scope["out"] / "sample0.gif").stat().st_size > 0
