"""Real object-store servers on 127.0.0.1 for the tests: moto's S3 server and gcp-storage-emulator's GCS
server, reached through the standard variables (``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``), which
the CLI processes the tests start inherit.

Both run in one helper process (``python object_stores.py``; its chatter goes to a log file, not into the
tests' captured output), started in about a second and driven by one-line commands on its standard input:
a server can be stopped and started again on its port with its objects kept (a store that goes away
during an upload and comes back), its PUTs slowed down, S3's credential checks switched on, and the query
of the GCS objects' inserts recorded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

BUCKET = "portable-wgangp-tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Servers:
    """The helper process, from the tests' side: ``environment`` reaches both servers."""

    def __init__(self, log_path):
        self.s3_port, self.gcs_port = free_port(), free_port()
        self.environment = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.gcs_port}",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
        self._log = open(log_path, "w")
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(self.s3_port), str(self.gcs_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **self.environment},
        )
        self.command("ready")

    def command(self, line: str):
        """Send one command; its answer (JSON)."""
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        assert answer, f"the object-store helper died; see {self._log.name}"
        return json.loads(answer)

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)
        self._log.close()


class Server:
    """One of the two servers: its scheme, and a fresh folder URL in the tests' bucket."""

    def __init__(self, servers: Servers, scheme: str):
        self.servers, self.scheme = servers, scheme

    def new_url(self) -> str:
        return f"{self.scheme}://{BUCKET}/{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        self.servers.command(f"stop {self.scheme}")

    def start(self) -> None:
        self.servers.command(f"start {self.scheme}")


# -- the helper process -----------------------------------------------------------------------------


def _serve(s3_port: int, gcs_port: int) -> None:
    import boto3
    import moto.settings
    from gcp_storage_emulator.handlers import objects as gcs_objects
    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    delay = {"seconds": 0.0}
    gcs_queries = []
    put_object, insert = S3Response.put_object, gcs_objects.insert

    def slow_put(self, *args, **kwargs):
        time.sleep(delay["seconds"])
        return put_object(self, *args, **kwargs)

    def recorded_insert(request, *args, **kwargs):
        gcs_queries.append(dict(request.query))
        return insert(request, *args, **kwargs)

    S3Response.put_object = slow_put
    gcs_objects.insert = recorded_insert  # before the server's routes take it
    from gcp_storage_emulator.server import create_server

    servers = {}

    def start(scheme):
        if scheme == "s3":
            servers[scheme] = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        else:
            servers[scheme] = create_server("127.0.0.1", gcs_port, in_memory=True, default_bucket=BUCKET)
        servers[scheme].start()

    start("s3")
    start("gs")
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}").create_bucket(Bucket=BUCKET)
    for line in sys.stdin:
        verb, _, argument = line.strip().partition(" ")
        answer = None
        if verb == "stop":
            servers[argument].stop()
        elif verb == "start":
            start(argument)
        elif verb == "slow_put":
            delay["seconds"] = float(argument)
        elif verb == "check_credentials":
            moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if argument == "on" else float("inf")
        elif verb == "gcs_insert_queries":
            answer, gcs_queries[:] = list(gcs_queries), []
        print(json.dumps(answer), flush=True)
    for server in servers.values():
        server.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
