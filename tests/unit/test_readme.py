from __future__ import annotations

from pathlib import Path

from streams.settings import Settings, env_name

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_every_setting() -> None:
    missing = [env_name(name) for name in Settings.model_fields if env_name(name) not in README]
    assert missing == [], f"add these to the README configuration table: {missing}"


def test_readme_shows_the_two_setup_commands() -> None:
    assert "make demo" in README
    assert "make test" in README
