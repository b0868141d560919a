"""Flink, Spark and job-service runs: default options, and checks that fail in one line, fast.

Beam's FlinkRunner and SparkRunner start a Java job server from a jar they would download from
Maven Central, where no Beam 2.77 job-server jar is served; `scripts/clusters.sh jars` builds
launcher jars for Beam's 2.62.0 runners (the newest that resolve whole) into the cache, and
`prepare` passes them on. Without checks, a wrong master or worker endpoint shows up minutes
later as a gRPC timeout; `prepare` asks each endpoint first, within seconds.

`python -m beam_etl.clusters boot ...` is a worker boot command for
`--environment_type=PROCESS` (Beam's own is a Go binary shipped only in its container image).
"""

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Final

from beam_etl.core.errors import BeamEtlError

#: The Beam release of the job servers `scripts/clusters.sh` builds (see the module docstring).
JOB_SERVER_VERSION: Final = "2.62.0"
#: The Flink minor version of the local cluster and of the Flink job server.
FLINK_VERSION: Final = "1.19"
CHECK_TIMEOUT_SECONDS: Final = 3.0
_LOOPBACK: Final = ("localhost", "127.0.0.1", "::1", "[::1]")
_SCRIPT: Final = "scripts/clusters.sh"


class ClusterError(BeamEtlError):
    """A runner's cluster, job server or workers cannot be reached or started."""


def cache_dir() -> str:
    """Return the cache folder of `scripts/clusters.sh` ($BEAM_ETL_CACHE or ~/.cache/beam_etl)."""
    return os.environ.get("BEAM_ETL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "beam_etl"
    )


def job_server_jar(runner: str) -> str:
    """Return where `scripts/clusters.sh jars` puts the job-server jar of `runner` (FlinkRunner
    or SparkRunner); the file may not exist yet."""
    jobserver = os.path.join(cache_dir(), "jobserver")
    if runner == "FlinkRunner":
        name = f"flink-{FLINK_VERSION}-job-server-{JOB_SERVER_VERSION}"
        folder = f"flink-{FLINK_VERSION}-{JOB_SERVER_VERSION}"
    else:
        name = f"spark-3-job-server-{JOB_SERVER_VERSION}"
        folder = f"spark-3-{JOB_SERVER_VERSION}"
    return os.path.join(jobserver, folder, f"beam-runners-{name}.jar")


def _option(args: list[str], name: str) -> str | None:
    """Return the last value of `--name=value` or `--name value` in `args`."""
    found = None
    for index, arg in enumerate(args):
        if arg == f"--{name}" and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
    return found


def _host_port(address: str, what: str) -> tuple[str, int]:
    try:
        parsed = urllib.parse.urlsplit(address if "//" in address else f"//{address}")
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ClusterError(f"{what} `{address}` is not HOST:PORT")
    return host, port


def _is_loopback(address: str) -> bool:
    try:
        return _host_port(address, "address")[0] in _LOOPBACK
    except ClusterError:
        return False


def prepare(beam_args: list[str], runner: str) -> list[str]:
    """Return `beam_args` with this project's defaults for `runner`, after checking that what
    they name answers.

    Defaults: FlinkRunner and SparkRunner get the cached job-server jar and `--flink_version`;
    on a master on this machine the workers run in this process (`LOOPBACK`) unless an
    environment is given (Beam's default, DOCKER, needs a worker image). Checks, each a few
    seconds at most: the jar and every jar it names exist, Java runs, the Flink master answers
    its REST API with a TaskManager of the expected version, the Spark master and the job
    endpoint accept connections, an EXTERNAL worker pool answers, a PROCESS boot command imports
    apache_beam and beam_etl.

    Raises:
        ClusterError: one line saying what does not answer or is missing, and what to run.
    """
    args = list(beam_args)
    if runner in ("FlinkRunner", "SparkRunner"):
        args = _cluster_defaults(args, runner)
    elif runner == "PortableRunner":
        endpoint = _option(args, "job_endpoint")
        if not endpoint:
            raise ClusterError(
                "PortableRunner needs `--job_endpoint=HOST:PORT` (a Beam job service)"
            )
        check_job_endpoint(endpoint)
    else:
        return args
    check_environment(args)
    return args


def _cluster_defaults(args: list[str], runner: str) -> list[str]:
    flink = runner == "FlinkRunner"
    jar_option = "flink_job_server_jar" if flink else "spark_job_server_jar"
    jar = _option(args, jar_option) or os.environ.get(f"BEAM_ETL_{jar_option.upper()}")
    if not jar:
        jar = job_server_jar(runner)
    args = [a for a in args if not a.startswith(f"--{jar_option}")] + [f"--{jar_option}={jar}"]
    check_job_server_jar(jar, runner)
    # No master, `[auto]`, `[local]` or `local[N]`: the job server runs an embedded cluster
    # (and Beam picks LOOPBACK workers itself).
    master = _option(args, "flink_master" if flink else "spark_master_url") or ""
    embedded = not master or master.startswith(("[", "local"))
    if flink:
        version = _option(args, "flink_version")
        if version is None:
            args.append(f"--flink_version={FLINK_VERSION}")
        if not embedded:
            check_flink_master(master, version or FLINK_VERSION)
    elif not embedded:
        check_spark_master(master)
    if (
        not embedded
        and _is_loopback(master.split("//")[-1])
        and _option(args, "environment_type") is None
    ):
        args.append("--environment_type=LOOPBACK")
    return args


def check_job_server_jar(jar: str, runner: str) -> None:
    """Raise `ClusterError` unless `jar` and every jar its manifest names exist and Java runs."""
    if not os.path.isfile(jar):
        raise ClusterError(
            f"The {runner} job-server jar `{jar}` does not exist: build it with "
            f"`{_SCRIPT} jars` (Beam {JOB_SERVER_VERSION}'s runner from Maven Central; "
            "Beam's own download of a 2.77 jar fails)"
        )
    missing = [path for path in _manifest_class_path(jar) if not os.path.exists(path)]
    if missing:
        raise ClusterError(
            f"The job-server jar `{jar}` names {len(missing)} jar(s) that are gone "
            f"(first: `{missing[0]}`): rebuild with `rm {shlex.quote(jar)} && {_SCRIPT} jars`"
        )
    java = shutil.which("java") or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else None
    )
    if java is None or not os.access(java, os.X_OK):
        raise ClusterError(
            f"{runner} starts its job server with Java, and `java` is not on PATH "
            "(install OpenJDK 17: `scripts/services.sh up java`)"
        )


def _manifest_class_path(jar: str) -> list[str]:
    try:
        with zipfile.ZipFile(jar) as archive:
            manifest = archive.read("META-INF/MANIFEST.MF").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ClusterError(f"The job-server jar `{jar}` cannot be read: {exc}") from exc
    joined = manifest.replace("\r\n ", "").replace("\n ", "")
    for line in joined.splitlines():
        if line.startswith("Class-Path:"):
            base = os.path.dirname(os.path.abspath(jar))
            return [
                urllib.parse.unquote(e.removeprefix("file:"))
                if e.startswith("file:")
                else os.path.join(base, e)
                for e in line.split(":", 1)[1].split()
            ]
    return []


def _get_json(url: str, what: str, hint: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT_SECONDS) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClusterError(f"{what} does not answer at `{url}` ({reason}): {hint}") from None


def check_flink_master(master: str, flink_version: str) -> None:
    """Raise `ClusterError` unless a Flink JobManager answers at `master` (its REST address)
    with a TaskManager and free slots, in the minor version `flink_version`."""
    base = master if master.startswith("http") else f"http://{master}"
    hint = (
        f"start the local cluster with `{_SCRIPT} up flink` and pass the `--flink_master` it "
        "prints, or give a running JobManager's REST address (HOST:PORT, usually port 8081)"
    )
    overview = _get_json(f"{base.rstrip('/')}/overview", "The Flink master", hint)
    if "taskmanagers" not in overview:
        raise ClusterError(f"`{master}` answers, but not as a Flink JobManager's REST API: {hint}")
    if not overview["taskmanagers"] or not overview.get("slots-total"):
        raise ClusterError(
            f"The Flink master `{master}` has no TaskManager (no task slots): start one "
            f"(`taskmanager.sh start`) or restart the local cluster with `{_SCRIPT} up flink`"
        )
    running = str(overview.get("flink-version", ""))
    if running and not running.startswith(f"{flink_version}."):
        raise ClusterError(
            f"The Flink master `{master}` runs Flink {running}, and `--flink_version` is "
            f"{flink_version}: pass `--flink_version={'.'.join(running.split('.')[:2])}` "
            f"with that version's job server, or use the local Flink {FLINK_VERSION} cluster"
        )


def _connects(host: str, port: int) -> OSError | None:
    try:
        with socket.create_connection((host, port), timeout=CHECK_TIMEOUT_SECONDS):
            return None
    except OSError as exc:
        return exc


def check_spark_master(master_url: str) -> None:
    """Raise `ClusterError` unless a Spark standalone master accepts connections at
    `master_url` (spark://HOST:PORT)."""
    if not master_url.startswith("spark://"):
        raise ClusterError(
            f"`--spark_master_url={master_url}` is not a standalone master (spark://HOST:PORT)"
        )
    host, port = _host_port(master_url.removeprefix("spark://"), "--spark_master_url")
    failure = _connects(host, port)
    if failure is not None:
        raise ClusterError(
            f"The Spark master does not answer at `{master_url}` ({failure}): start the local "
            f"cluster with `{_SCRIPT} up spark` and pass the `--spark_master_url` it prints"
        )


def check_job_endpoint(endpoint: str) -> None:
    """Raise `ClusterError` unless a gRPC server answers at the job `endpoint` within seconds."""
    import grpc

    host, port = _host_port(endpoint, "--job_endpoint")
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=CHECK_TIMEOUT_SECONDS)
    except grpc.FutureTimeoutError:
        raise ClusterError(
            f"No Beam job service answers at `--job_endpoint={endpoint}` within "
            f"{CHECK_TIMEOUT_SECONDS:.0f} s: start one (`python -m "
            "apache_beam.runners.portability.local_job_service_main --port PORT`, or "
            f"`{_SCRIPT} up flink-job-server`) and pass its port"
        ) from None
    finally:
        channel.close()


def check_environment(args: list[str]) -> None:
    """Raise `ClusterError` when the worker environment in `args` cannot work: an EXTERNAL pool
    that does not answer, a PROCESS command that is missing or cannot import beam_etl, DOCKER
    with no docker."""
    kind = (_option(args, "environment_type") or "").upper()
    config = _option(args, "environment_config") or ""
    if kind == "EXTERNAL":
        if not config:
            raise ClusterError(
                "`--environment_type=EXTERNAL` needs `--environment_config=HOST:PORT`"
            )
        host, port = _host_port(config, "--environment_config")
        failure = _connects(host, port)
        if failure is not None:
            raise ClusterError(
                f"No worker pool answers at `--environment_config={config}` ({failure}): start "
                "one from the project's venv: `python -m apache_beam.runners.worker."
                f"worker_pool_main --service_port={port}` (its python must import beam_etl)"
            )
    elif kind == "PROCESS":
        _check_process_command(config)
    elif kind == "DOCKER" and shutil.which("docker") is None:
        raise ClusterError(
            "`--environment_type=DOCKER` (Beam's default for a remote master) needs docker on "
            "the workers: use LOOPBACK on one machine, or EXTERNAL / PROCESS (see the README)"
        )


def _check_process_command(config: str) -> None:
    try:
        command = json.loads(config)["command"] if config else None
    except (ValueError, KeyError, TypeError):
        command = None
    if not command:
        raise ClusterError(
            '`--environment_type=PROCESS` needs `--environment_config={"command": "PATH"}`; '
            "this project's boot command is printed by `python -m beam_etl.clusters boot-command`"
        )
    if not os.access(command, os.X_OK):
        raise ClusterError(f"The PROCESS boot command `{command}` is not an executable file")
    python = _boot_python(command)
    if python is None:
        return
    probe = [python, "-c", "import apache_beam, beam_etl"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"The workers' python `{python}` does not run: {exc}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClusterError(
            f"The workers' python `{python}` cannot import apache_beam and beam_etl ({last}): "
            "install the project there (`pip install -r requirements.txt -e .`)"
        )


def _boot_python(command: str) -> str | None:
    """Return the python a boot script written by `boot_command` runs, else None."""
    try:
        with open(command, encoding="utf-8") as script:
            head = script.read(2000)
    except (OSError, UnicodeDecodeError):
        return None
    for line in head.splitlines():
        if line.startswith("exec ") and "-m beam_etl.clusters boot" in line:
            return shlex.split(line)[1]
    return None


def boot_command(python: str | None = None) -> str:
    """Write (if needed) and return a PROCESS boot script that runs `python` (default: this
    interpreter) as Beam's SDK worker."""
    python = os.path.abspath(python or sys.executable)
    folder = os.path.join(cache_dir(), "boot")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "beam_etl_worker_boot")
    text = f'#!/bin/sh\nexec {shlex.quote(python)} -m beam_etl.clusters boot "$@"\n'
    current = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as script:
            current = script.read()
    if current != text:
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
    return path


def _boot(argv: list[str]) -> None:
    """Do what Beam's Go boot binary does for a Python worker already installed here: ask the
    runner's provision service for the pipeline options, then run the SDK harness."""
    parser = argparse.ArgumentParser(prog="python -m beam_etl.clusters boot")
    for name in ("id", "provision_endpoint", "logging_endpoint", "control_endpoint"):
        parser.add_argument(f"--{name}", default="")
    parser.add_argument("--semi_persist_dir", default="/tmp")
    known, _ = parser.parse_known_args(argv)
    import grpc
    from apache_beam.portability.api import (
        beam_provision_api_pb2,
        beam_provision_api_pb2_grpc,
        endpoints_pb2,
    )
    from google.protobuf import json_format, text_format

    channel = grpc.insecure_channel(known.provision_endpoint)
    stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
    info = stub.GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", known.id)]
    ).info
    channel.close()

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    control = known.control_endpoint or info.control_endpoint.url
    logging_url = known.logging_endpoint or info.logging_endpoint.url
    environment = dict(os.environ)
    environment.update(
        WORKER_ID=known.id,
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
        CONTROL_API_SERVICE_DESCRIPTOR=descriptor(control),
        LOGGING_API_SERVICE_DESCRIPTOR=descriptor(logging_url),
        SEMI_PERSISTENT_DIRECTORY=known.semi_persist_dir,
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    )
    if not logging_url:
        del environment["LOGGING_API_SERVICE_DESCRIPTOR"]
    os.execve(sys.executable, [sys.executable, "-m", "beam_etl.worker"], environment)


def main(argv: list[str] | None = None) -> int:
    """`boot ...` (a PROCESS worker) or `boot-command` (print the boot script's path)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["boot"]:
        _boot(argv[1:])
        return 0
    if argv[:1] == ["boot-command"]:
        print(boot_command())
        return 0
    print("usage: python -m beam_etl.clusters boot-command | boot --id=... ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
