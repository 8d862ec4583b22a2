"""The README's configuration table is the one `Settings` generates: every setting, its default."""

from __future__ import annotations

from pydantic import Field

from streamrec import settings_doc
from streamrec.settings import Settings


def test_readme_table_is_generated_from_settings() -> None:
    readme = settings_doc.README.read_text()
    assert settings_doc.render(readme) == readme, (
        "README's configuration table differs from Settings: run `python -m streamrec.settings_doc --write`")


def test_every_setting_has_a_row_with_its_default() -> None:
    table = settings_doc.table()
    for name, field in Settings.model_fields.items():
        assert f"| `STREAMREC_{name.upper()}` |" in table
        assert field.description, f"{name} has no description for the README"
    assert "| `STREAMREC_WORKER_ID` | `streamrec-worker` |" in table
    assert "| `STREAMREC_DATA_DIR` | `<repo>/.streamrec` |" in table


def test_a_new_setting_changes_the_table(monkeypatch) -> None:
    class More(Settings):
        brand_new_knob: int = Field(7, description="A knob the README does not know yet.")

    monkeypatch.setattr(settings_doc, "Settings", More)
    readme = settings_doc.README.read_text()
    assert settings_doc.render(readme) != readme
    assert "| `STREAMREC_BRAND_NEW_KNOB` | `7` | A knob the README does not know yet. |" in settings_doc.table()
