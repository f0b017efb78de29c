"""The README's configuration table names every setting."""

from __future__ import annotations

from pathlib import Path

from chatlens.settings import Settings, env_name


def test_every_setting_is_in_the_readme_configuration_table(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [env_name(f) for f in Settings.model_fields if f"`{env_name(f)}`" not in table]
    assert missing == [], f"settings missing from the README: {missing}"
