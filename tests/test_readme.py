"""The README's library example runs as written (real SDK, simulator, SQLite audit log)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_library_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert '{"abandoned_threads": 0' in capsys.readouterr().out
    assert namespace["quote"].bid_price == Decimal("187.10")  # type: ignore[attr-defined]
    assert namespace["trail"][-1] == "closed"  # type: ignore[index]
