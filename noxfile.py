"""Test sessions: `nox` runs lint and the suite once per Keras backend (pip, CPU wheels)."""

import nox

nox.options.sessions = ["lint", "tests", "together", "docs"]
nox.options.default_venv_backend = "venv"  # pip, never uv: uv ignores the local CPU torch wheel

CONSTRAINTS = "constraints-cpu.txt"
EXTRAS = {"jax": "jax", "tensorflow": "tensorflow-cpu", "torch": "torch"}
# pytest-xdist: one worker per core (at most 4: each holds a framework and starts CLI processes), a test
# file to a worker (its module fixtures, such as a run it resumes from, are made once).
PARALLEL = ["--numprocesses", "auto", "--maxprocesses", "4", "--dist", "loadfile"]


@nox.session
@nox.parametrize("backend", list(EXTRAS))
def tests(session: nox.Session, backend: str) -> None:
    """The whole suite on one backend: `nox -s "tests(backend='torch')"`."""
    session.install("-c", CONSTRAINTS, f".[{EXTRAS[backend]},dev]")
    session.run("pytest", *PARALLEL, *session.posargs, env={"KERAS_BACKEND": backend})


@nox.session
def together(session: nox.Session) -> None:
    """TensorFlow, JAX and torch installed together (as on Colab and GPU images), which one-framework
    venvs hide: a run on each backend loads no other framework (`test_imports.py`) and trains with N steps
    a call."""
    session.install("-c", CONSTRAINTS, f".[{','.join(EXTRAS.values())},dev]")
    for backend in EXTRAS:
        tests = ["backends_tests/test_imports.py", "backends_tests/test_steps_per_execution.py"]
        # the CLI run of test_imports stands for the command line here; the steps-per-execution CLI test
        # runs in each backend's own session
        in_process = ["-k", "not test_cli_logs_every_step"]
        session.run("pytest", *tests, *in_process, *session.posargs, env={"KERAS_BACKEND": backend})


@nox.session
@nox.parametrize("backend", list(EXTRAS))
def nightly(session: nox.Session, backend: str) -> None:
    """The suite against keras-nightly (the next Keras, 3.16.dev), one backend at a time; not in the
    default run: `nox -s "nightly(backend='torch')"` (pytest arguments after `--`)."""
    session.install("-c", CONSTRAINTS, f".[{EXTRAS[backend]},dev]")
    session.run("pip", "uninstall", "--yes", "keras", "keras-nightly")  # both ship the `keras` package
    session.install("keras-nightly")
    env = {"KERAS_BACKEND": backend}
    session.run("python", "-c", "import keras; print('keras', keras.__version__)", env=env)
    session.run("pytest", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-c", CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs, Material, mkdocstrings): built with --strict (a broken link, a missing
    reference or a docstring that does not match its signature fails), then opened in headless Chromium
    (`docs_tests`; Debian's ``chromium`` package, which .ci/run installs)."""
    session.install("-c", CONSTRAINTS, ".[jax,docs]", "pytest")
    site = session.create_tmp() + "/site"
    env = {"KERAS_BACKEND": "jax", "NO_MKDOCS_2_WARNING": "1"}
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env=env)
    session.run("pytest", "docs_tests", *session.posargs, env={**env, "SITE": site})
