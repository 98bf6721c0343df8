"""The README's generated parts match the code."""

from __future__ import annotations

from pathlib import Path

from steper_ray.commands.config_reference import END, START, render_reference
from steper_ray.config import SteperConfig

REPO = Path(__file__).resolve().parents[2]


def test_readme_config_reference_is_generated_from_the_models() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render_reference(), "run `steper-ray config-reference --write` and commit README.md"
    # every leaf key of the config appears, with its description
    def leaves(model: object, prefix: str = "") -> list[str]:
        out = []
        for name in type(model).model_fields:
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                out += leaves(value, f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    for key in leaves(SteperConfig()):
        assert f"`{key}`" in block, key


def test_readme_starts_with_the_two_commands_and_shows_the_architecture() -> None:
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.split("```bash", 1)[1].split("```", 1)[0].splitlines() if line.strip()]
    assert commands[0].startswith("./install.sh && .venv/bin/steper-ray pipeline")
    assert commands[1].startswith("./install.sh --dev && .venv/bin/python -m pytest -q")
    assert "![architecture](docs/architecture.png)" in readme
    assert (REPO / "docs" / "architecture.png").stat().st_size > 50_000


def test_config_reference_command(tmp_path: Path, capsys: object) -> None:
    from steper_ray.cli import main

    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out.strip() == render_reference()  # type: ignore[attr-defined]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\nold\n{END}\ntail\n")
    assert main(["config-reference", "--write", str(readme)]) == 0
    assert readme.read_text() == f"# x\n\n{START}\n{render_reference()}\n{END}\ntail\n"
    readme.write_text("no markers\n")
    assert main(["config-reference", "--write", str(readme)]) == 2


def test_readme_lists_every_command_and_shows_the_run_report() -> None:
    from steper_ray.cli import build_parser

    readme = (REPO / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"| `steper-ray {command}" in table, f"`steper-ray {command}` is not in the README's command table"
    assert "![run report](docs/report.png)" in readme and "## Run report" in readme
    assert (REPO / "docs" / "report.png").stat().st_size > 50_000
    layout = readme.split("## Run layout", 1)[1]
    assert "report.html            the run report" in layout
