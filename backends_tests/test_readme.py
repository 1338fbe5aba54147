"""The README's promises: its Python example runs as written; CI runs its test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def fenced_block(after_heading: str, language: str) -> str:
    section = README.split(after_heading, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(fenced_block("## Use it from Python", "python"), "README.md", "exec"), {})
    assert (tmp_path / "demo.keras").is_file()
    assert "wasserstein_estimate" in capsys.readouterr().out


def test_quick_start_is_two_lines_install_and_test():
    lines = fenced_block("## Quick start", "bash").strip().splitlines()
    assert len(lines) == 2
    assert "pip install" in lines[0] and "portable-wgangp train" in lines[0]
    assert "nox" in lines[1]
