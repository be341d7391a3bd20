"""What the README tells a new user to type (its walkthrough runs for real in
tests/tui/test_tui_e2e.py, the dashboard being its last line)."""

from __future__ import annotations

from tests.conftest import ROOT, readme_sh_block


def test_the_test_commands_say_how_to_run_the_postgresql_half_and_how_long_it_takes() -> None:
    lines = readme_sh_block("Run the tests").splitlines()
    assert lines[0].endswith("pip install -e '.[test]' && pytest")
    assert any(
        line.startswith("VC_TEST_DATABASE_URL=postgresql+psycopg://") and " pytest" in line
        for line in lines
    ), lines
    readme = (ROOT / "README.md").read_text()
    intro = readme[readme.index("Run the tests") :].split("\n", 1)[0]
    assert "minutes on 2 cores" in intro, intro
