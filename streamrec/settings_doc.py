"""The README's configuration table, generated from `Settings` so the two cannot disagree.

`python -m streamrec.settings_doc --write` rewrites the table between the README's markers;
tests/unit/test_settings_doc.py fails when they differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamrec.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return f"`<repo>/{value.relative_to(PROJECT_ROOT)}`"
        except ValueError:
            return f"`{value}`"
    return f"`{value}`"


def table() -> str:
    """One row per Settings field, in field order: variable, default, meaning."""
    prefix = Settings.model_config["env_prefix"]
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {_default(field.default)} | {meaning} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    """`readme` with the text between the markers replaced by the generated table."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table() + "\n" + readme[end:]


def main(argv: list[str]) -> int:
    text = README.read_text()
    if "--write" in argv:
        README.write_text(render(text))
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
