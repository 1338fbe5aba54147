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


def test_an_installed_backend_is_picked_when_none_is_set(tmp_path):
    """The quick start installs one framework and sets no KERAS_BACKEND: keras must not fall back to TF."""
    import importlib.util
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    (tmp_path / "keras.json").write_text('{"backend": "tensorflow"}')  # what Keras writes on first import
    env["KERAS_HOME"] = str(tmp_path)
    code = "import portable_wgangp, keras; print(keras.backend.backend())"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    expected = next(name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name))
    assert result.stdout.strip().splitlines()[-1] == expected, result.stderr[-2000:]
