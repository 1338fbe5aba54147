"""What a checkpoint costs the step: ms per generator step of the digits DCGAN at --checkpoint-every 10,
the write blocking the step vs in the background (`callbacks.CheckpointWriter`), to a local folder and to
object storage (moto's S3 server on 127.0.0.1, as is and with every PUT delayed, as a distant store is).

    KERAS_BACKEND=jax python benchmarks/checkpoints.py --json out.json

Each row trains the CLI's digits DCGAN (its nets, batch, n_critic) for ``--steps`` steps with a checkpoint
every 10, after one warm-up call (compilation); the step time is the mean from the end of the first step
to the end of the last (the background writes of the last checkpoint waited for at the end are not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "backends_tests"))  # the tests' object-store servers

import keras  # noqa: E402
import object_stores  # noqa: E402

from portable_wgangp import callbacks, runs, tasks  # noqa: E402
from portable_wgangp import config as settings  # noqa: E402


def step_ms(folder: runs.RunFolder, background: bool, steps: int, every: int) -> float:
    config = settings.resolve({"dataset": "digits", "steps": steps}, None)
    task = tasks.make_task(config)
    gan = tasks.build_gan(config, task)
    gan.fit(task.rounds(first_step=0, steps=1), steps_per_epoch=1, epochs=1, verbose=0)  # compile
    writer = callbacks.CheckpointWriter(folder.publish, background=background)
    ends = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    checkpoint = callbacks.Checkpoint(folder / "checkpoint.keras", every, writer=writer)
    gan.fit(
        task.rounds(first_step=1, steps=steps),
        steps_per_epoch=steps,
        epochs=1,
        verbose=0,
        callbacks=[clock, checkpoint],
    )
    return 1e3 * (ends[-1] - ends[0]) / (len(ends) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=61)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds added to each PUT: a distant store")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        servers = object_stores.Servers(pathlib.Path(scratch) / "servers.log")
        os.environ.update(servers.environment)
        server = object_stores.Server(servers, "s3")
        places = {
            "local": lambda: runs.RunFolder(pathlib.Path(tempfile.mkdtemp(dir=scratch))),
            "s3 (127.0.0.1)": lambda: runs.RemoteRunFolder(server.new_url()),
            f"s3, PUT +{args.delay:g} s": lambda: runs.RemoteRunFolder(server.new_url()),
        }
        rows = []
        for place, make in places.items():
            servers.command(f"slow_put {args.delay if 'PUT' in place else 0}")
            for background in (False, True):
                ms = step_ms(make(), background, args.steps, args.every)
                rows.append(
                    {"to": place, "write": "background" if background else "blocking", "ms_per_step": ms}
                )
                print(f"{place:>18}  {rows[-1]['write']:>10}  {ms:7.2f} ms/step", flush=True)
        servers.close()
    no_checkpoint = step_ms(runs.RunFolder(tempfile.mkdtemp()), True, args.steps, 10**9)
    print(f"{'no checkpoint':>18}  {'':>10}  {no_checkpoint:7.2f} ms/step")
    if args.json:
        result = {
            "backend": keras.backend.backend(),
            "steps": args.steps,
            "checkpoint_every": args.every,
            "put_delay_s": args.delay,
            "no_checkpoint_ms_per_step": no_checkpoint,
            "rows": rows,
        }
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
