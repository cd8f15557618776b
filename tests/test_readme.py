"""The README's library examples run as written (real SDK, simulator, SQLite audit log)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2, "the README needs its sync and its async example"
    return blocks


def test_readme_sync_example_runs(capsys):
    namespace: dict[str, object] = {}
    exec(compile(_examples()[0], str(README), "exec"), namespace)
    assert '{"abandoned_transports": 0' in capsys.readouterr().out
    assert namespace["quote"].bid_price == Decimal("187.10")  # type: ignore[attr-defined]
    assert namespace["trail"][-1] == "closed"  # type: ignore[index]


def test_readme_async_example_runs():
    namespace: dict[str, object] = {}
    exec(compile(_examples()[1], str(README), "exec"), namespace)
    assert namespace["seen"] == ["AAPL", "fill", "2"]


def test_readme_crypto_options_news_example_runs():
    namespace: dict[str, object] = {}
    (example,) = [block for block in _examples() if "crypto_data" in block]
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["kinds"] == ["crypto_data", "news", "option_data"]
    assert namespace["btc"].bid_price == Decimal("67000.50")  # type: ignore[attr-defined]
