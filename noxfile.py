"""Test sessions: `nox` runs lint and the suite once per Keras backend (pip, CPU wheels)."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"  # pip, never uv: uv ignores the local CPU torch wheel

CONSTRAINTS = "constraints-cpu.txt"
EXTRAS = {"jax": "jax", "tensorflow": "tensorflow-cpu", "torch": "torch"}


@nox.session
@nox.parametrize("backend", list(EXTRAS))
def tests(session: nox.Session, backend: str) -> None:
    """The whole suite on one backend: `nox -s "tests(backend='torch')"`."""
    session.install("-c", CONSTRAINTS, f".[{EXTRAS[backend]},dev]")
    session.run("pytest", *session.posargs, env={"KERAS_BACKEND": backend})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-c", CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
