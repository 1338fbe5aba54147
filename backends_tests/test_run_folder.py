"""A run folder's rules (`portable_wgangp.runs`): nothing is lost to a rerun, a wrong flag, a second
writer, a full disk or a torn file. Commands run in-process through `cli.main` (fast); the one-line
stderr and the exit statuses of real processes are checked in test_preemption.py and test_cli.py."""

import errno
import json
import os
import warnings

import keras
import pytest

from portable_wgangp import cli, files, runs

SHORT = ["--steps", "6", "--batch-size", "16", "--width", "8", "--depth", "1", "--checkpoint-every", "3"]


def train(out, *extra):
    return cli.main(["train", "--out", str(out), "--quiet", *SHORT, *extra])


def snapshot(folder) -> dict:
    """Every file of a folder with its bytes (the lock file aside)."""
    return {
        p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != runs.LOCK_NAME
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    assert train(out) == 0
    return out


def error_of(capfd) -> str:
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_rerun_into_a_finished_run_is_refused_and_changes_nothing(finished, capfd):
    before = snapshot(finished)
    assert train(finished) == 2
    message = error_of(capfd)
    assert "already holds a run" in message and "--resume" in message and "--overwrite" in message
    assert snapshot(finished) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-critic", "0"], "--n-critic must be at least 1"),
        (["--lr", "-1"], "--lr must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--gp-weight", "inf"], "--gp-weight must be a finite number >= 0"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
        (["--seed", "-3"], "--seed must be at least 0"),
        (["--beta-2", "1.0"], "--beta-2 must lie in [0, 1)"),
        (["--penalty", "hinge"], "Unknown penalty 'hinge'"),
        (["--strategy", "horovod"], "does not fit the"),
        (["--dataset", "mnist"], "Unknown dataset 'mnist'"),
        (["--model", "resnet"], "Unknown model 'resnet' for 2-D data"),
        (["--conditional"], "has no labels"),
        (["--overwrite", "--resume"], "pass one of them"),
    ],
)
def test_a_refused_command_leaves_a_finished_run_untouched(finished, flags, message, capfd):
    before = snapshot(finished)
    assert train(finished, *flags, "--overwrite" if "--resume" not in flags else "--quiet") == 2
    assert message in error_of(capfd)
    assert snapshot(finished) == before


def test_a_refused_command_creates_no_folder(tmp_path, capfd):
    assert train(tmp_path / "new", "--lr", "0") == 2
    assert "--lr" in error_of(capfd)
    assert not (tmp_path / "new").exists()


def test_overwrite_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "metrics.jsonl").write_text('{"step": 99, "critic_loss": 0}\n')
    assert train(out, "--overwrite", "--steps", "4") == 0
    assert [r["step"] for r in files.read_records(out / "metrics.jsonl")] == [1, 2, 3, 4]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capfd):
    out = tmp_path / "busy"
    folder = runs.RunFolder(out)
    with folder.claim("new"):  # this process holds the lock, as a running `train` would
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert train(out, *extra) == 2
            message = error_of(capfd)
            assert "in use by another portable-wgangp process" in message and f"pid {os.getpid()}" in message
    assert train(out) == 0  # released with the holder


def test_resume_refuses_changed_settings_and_names_them(finished, capfd):
    before = snapshot(finished)
    assert cli.main(["train", "--resume", "--out", str(finished), "--batch-size", "64"]) == 2
    message = error_of(capfd)
    assert "--batch-size 64 differs from the run's batch_size = 16" in message and "--overwrite" in message
    toml = finished.parent / "changed.toml"
    toml.write_text("lr = 0.5\n")
    assert cli.main(["train", "--resume", "--out", str(finished), "--config", str(toml)]) == 2
    assert "--lr 0.5 differs" in error_of(capfd)
    assert cli.main(["train", "--resume", "--out", str(finished), "--dataset", "swissroll"]) == 2
    assert "--dataset swissroll differs" in error_of(capfd)
    assert snapshot(finished) == before


def test_resume_honours_steps_and_checkpoint_every(tmp_path):
    out = tmp_path / "run"
    assert train(out) == 0
    assert cli.main(["train", "--resume", "--out", str(out), "--steps", "9", "--checkpoint-every", "2"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps"], saved["checkpoint_every"], saved["batch_size"]) == (9, 2, 16)
    assert [r["step"] for r in files.read_records(out / "metrics.jsonl")] == list(range(1, 10))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capfd):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(a) == 0 and train(b, "--seed", "5") == 0
    (a / "checkpoint.keras").write_bytes((b / "checkpoint.keras").read_bytes())
    assert cli.main(["train", "--resume", "--out", str(a)]) == 2
    assert "does not belong to the run" in error_of(capfd)


def test_resume_refuses_shortening_a_run(finished, capfd):
    assert cli.main(["train", "--resume", "--out", str(finished), "--steps", "2"]) == 2
    assert "past --steps 2" in error_of(capfd)


def test_resume_of_a_run_without_checkpoint_says_how_to_restart(tmp_path, capfd):
    (tmp_path / "config.json").write_text(json.dumps({"steps": 5}))
    assert cli.main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "stopped before its first checkpoint" in error_of(capfd)


def test_a_torn_metrics_line_is_dropped_with_a_warning_on_resume(tmp_path):
    out = tmp_path / "torn"
    assert train(out) == 0
    with open(out / "metrics.jsonl", "a") as log:
        log.write('{"step": 7, "critic_lo')  # a crash or a full disk cut the last line
    with pytest.warns(RuntimeWarning, match=r"metrics.jsonl: dropped 1 torn or corrupt line\(s\) \(line 7\)"):
        assert cli.main(["train", "--resume", "--out", str(out), "--steps", "8", "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing torn is left
        assert [r["step"] for r in files.read_records(out / "metrics.jsonl")] == list(range(1, 9))


def test_read_records_drops_torn_lines_and_keeps_the_rest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n[1, 2]\n{"step": 2}\n{"step": 3, "x"')
    with pytest.warns(RuntimeWarning, match=r"dropped 2 torn or corrupt line\(s\) \(line 2, 4\)"):
        assert files.read_records(path) == [{"step": 1}, {"step": 2}]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_metrics_time_leaves_no_torn_line_and_the_run_resumes(tmp_path, monkeypatch, capfd):
    out = tmp_path / "full"
    real_write, calls = os.write, []

    def write_then_fill(fd, data):
        calls.append(data)
        if b'"step": 5' in data:  # half a line reaches the disk, then it is full
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", write_then_fill)
    assert train(out) == 2
    message = error_of(capfd)
    assert "No space left on device" in message and "metrics.jsonl" in message and "--resume" in message
    monkeypatch.undo()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]  # cut back to whole lines
    assert cli.main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert [r["step"] for r in files.read_records(out / "metrics.jsonl")] == list(range(1, 7))


def test_a_full_disk_at_checkpoint_time_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capfd):
    out = tmp_path / "full"
    real_save, saves = keras.Model.save, []

    def save_then_fill(model, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the checkpoint of step 6: half written, then the disk is full
            open(path, "wb").write(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save_then_fill)
    assert train(out) == 2
    message = error_of(capfd)
    assert "checkpoint.keras" in message and "previous version is intact" in message
    monkeypatch.undo()
    assert not any(p.name.startswith(".checkpoint") for p in out.iterdir())  # no temporary file left
    gan = keras.models.load_model(out / "checkpoint.keras")
    assert int(gan.generator_optimizer.iterations) == 3  # the step-3 checkpoint, intact
    assert cli.main(["train", "--resume", "--out", str(out), "--quiet"]) == 0


def test_out_must_be_a_folder_name(tmp_path, capfd):
    assert train("") == 2
    assert "--out must name a folder" in error_of(capfd)
    (tmp_path / "file").write_text("x")
    assert train(tmp_path / "file") == 2
    assert "is a file, not a folder" in error_of(capfd)


def test_a_folder_of_other_files_is_not_a_run_and_keeps_them(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert train(tmp_path) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert train(tmp_path, "--overwrite") == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_refusal_of_process_0_is_the_same_line_in_every_process(tmp_path):
    """2 processes of one run whose --out cannot be created (it lies below a file): process 0 refuses,
    and every process prints that one line and exits 2 (not a failed collective in the others)."""
    import subprocess
    import sys

    from test_distribution import TIMEOUT, process_environments
    from test_preemption import MULTI_PROCESS

    strategy, processes = MULTI_PROCESS
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "run"
    command = [sys.executable, "-m", "portable_wgangp", "train", "--out", str(out), "--strategy", strategy]
    running = [
        subprocess.Popen(
            [*command, *SHORT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for env in process_environments(strategy, processes, processes)
    ]
    errors = []
    for process in running:
        _, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 2, stderr[-3000:]
        errors.append(stderr.strip().splitlines())
    assert all(len(lines) == 1 for lines in errors), errors
    assert len({lines[0] for lines in errors}) == 1 and "Cannot create the output folder" in errors[0][0]
