"""The README's settings table, generated from the settings classes (so it cannot drift)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from libs.common.settings import Settings

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def settings_table() -> str:
    rows = ["| variable | default | concern | meaning |", "|---|---|---|---|"]
    settings = Settings()
    for concern, obj in vars(settings).items():
        assert isinstance(obj, BaseSettings)
        for name, field in type(obj).model_fields.items():
            default = field.default
            shown = "" if default in ("", None) else f"`{default}`"
            meaning = (field.description or name.replace("_", " ")).replace("|", "\\|")
            rows.append(f"| `{field.alias}` | {shown} | {concern} | {meaning} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


def main() -> None:
    path = Path("README.md")
    path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main()
