"""A single-node KRaft Kafka broker for local runs: reuse one that answers, else start our own.

No tarball and no Docker: the broker's jars come from Maven (infra/kafka/pom.xml) into a cache dir,
and the broker runs as `java -cp 'libs/*' kafka.Kafka server.properties` under `infra.process`.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
import warnings
from pathlib import Path

from infra import process
from streamrec.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"
POM = PROJECT_ROOT / "infra" / "kafka" / "pom.xml"
PROBE_TIMEOUT_S = 3.0


class KafkaSetupError(RuntimeError):
    """The local broker cannot be provided; the message says what to install or fix."""


# --- addresses and probes -----------------------------------------------------------------------------
def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """(host, port) of the first server in a bootstrap list like "host:9092,other:9092"."""
    first = re.sub(r"^[A-Za-z_]+://", "", bootstrap.split(",")[0].strip())
    host, _, port = first.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port or 9092)


def bootstrap_address(settings: Settings) -> tuple[str, int]:
    return parse_bootstrap(settings.kafka_bootstrap)


def is_local(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}  # noqa: S104 - comparison only


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


_HANDED_OUT: set[int] = set()  # by free_port, in this process


def free_port(host: str = "127.0.0.1", low: int = 20_000, high: int = 32_000) -> int:
    """A port free now, below the kernel's ephemeral range (32768+ on Linux).

    Ports the OS hands out with bind(0) come from the ephemeral range, where any outgoing
    connection may take them again before our server binds; this range is only ours. A port is
    handed out once per process: two calls before either server binds (a broker's PLAINTEXT and
    CONTROLLER listeners, an API and a worker port) must not get the same one.
    """
    import random

    for _ in range(200):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port found on {host} between {low} and {high}")


def _admin(bootstrap: str, timeout_s: float):  # -> kafka.KafkaAdminClient
    from kafka import KafkaAdminClient

    ms = int(timeout_s * 1000)
    wanted = {
        "bootstrap_servers": bootstrap,
        "client_id": "streamrec-infra",
        "request_timeout_ms": ms,
        "bootstrap_timeout_ms": ms,  # kafka-python 3.x
        "api_version_auto_timeout_ms": ms,  # kafka-python 2.x
    }
    # Only pass the options this kafka-python version knows (2.x rejects unknown ones).
    return KafkaAdminClient(**{k: v for k, v in wanted.items() if k in KafkaAdminClient.DEFAULT_CONFIG})


def broker_answers(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True if a Kafka broker answers a metadata request at `bootstrap` (bounded by ~timeout_s)."""
    host, port = parse_bootstrap(bootstrap)
    if not port_open(host, port, min(timeout_s, 1.0)):
        return False  # fail fast: nothing listens
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # a failing probe is an expected answer, not news
    admin = None
    try:
        admin = _admin(bootstrap, timeout_s)
        admin.describe_cluster()
        return True
    except Exception:  # noqa: BLE001 - NoBrokersAvailable, timeouts, protocol errors
        return False
    finally:
        if admin is not None:
            try:
                admin.close()
            except Exception:  # noqa: BLE001
                pass
        kafka_log.setLevel(level)


# --- prerequisites ------------------------------------------------------------------------------------
_INSTALL_HINT = (
    "install Java 17+ and Maven, e.g. `apt-get install -y openjdk-17-jre-headless maven` (Debian/Ubuntu) "
    "or `brew install openjdk@17 maven` (macOS) — or point STREAMREC_KAFKA_BOOTSTRAP at a running broker"
)


def java_binary() -> str:
    """Path of a Java 17+ `java` ($JAVA_HOME first), else KafkaSetupError saying what to install."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else None
    java = candidate or shutil.which("java")
    if java is None:
        raise KafkaSetupError(f"`java` not found; the local Kafka broker needs it: {_INSTALL_HINT}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))  # "1.8.0" means Java 8
    if major < 17:
        raise KafkaSetupError(f"{java} is Java {major or '?'}; Kafka 4 needs Java 17+: {_INSTALL_HINT}")
    return java


def ensure_jars(settings: Settings) -> Path:
    """Resolve the broker's jars with Maven into settings.kafka_libs once; returns that directory."""
    libs = settings.kafka_libs
    marker = libs / f"kafka_2.13-{settings.kafka_version}.jar"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(f"`mvn` not found; it fetches Kafka's jars: {_INSTALL_HINT}")
    if not POM.exists():
        raise KafkaSetupError(f"{POM} is missing (run `streamrec up` from a source checkout)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = libs.parent / f".{libs.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", f"-Dkafka.version={settings.kafka_version}"]
    log.info("fetching Kafka %s jars: %s", settings.kafka_version, " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaSetupError("Maven did not fetch Kafka's jars within 15 minutes") from exc
    if done.returncode != 0 or not (staging / marker.name).exists():
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise KafkaSetupError(f"Maven could not fetch Kafka {settings.kafka_version} jars:\n{tail}")
    # Swap in whole, so an interrupted fetch or an old version never leaves a mixed classpath.
    old = libs.parent / f".{libs.name}.old-{os.getpid()}"
    if libs.exists():
        libs.replace(old)
    staging.replace(libs)
    shutil.rmtree(old, ignore_errors=True)
    return libs


# --- configuration and storage ------------------------------------------------------------------------
def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID, URL-safe base64 without padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def write_config(settings: Settings, controller_port: int) -> Path:
    """(Re)write server.properties and the log4j2 config under data_dir/kafka; returns the former.

    A static controller quorum (controller.quorum.voters) keeps the controller port out of the
    formatted storage, so it may differ between starts.
    """
    host, port = bootstrap_address(settings)
    bind = "127.0.0.1" if host in {"localhost", "0.0.0.0"} else host  # noqa: S104
    kdir = settings.kafka_dir
    kdir.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://{bind}:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{bind}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(kdir / "data"),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    server = kdir / "server.properties"
    server.write_text("# written by infra.kafka; regenerated on every start\n"
                      + "".join(f"{k}={v}\n" for k, v in props.items()))
    (kdir / "log4j2.properties").write_text(
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.out.ref = OUT\n"
        "logger.clients.name = org.apache.kafka.clients\n"
        "logger.clients.level = WARN\n"
    )
    return server


def format_storage(settings: Settings, java: str, libs: Path, server: Path) -> None:
    """Format the KRaft log dir once (skipped when meta.properties already exists)."""
    data = settings.kafka_dir / "data"
    if (data / "meta.properties").exists():
        return
    cmd = [java, "-cp", f"{libs}/*", *_log_flags(settings), "kafka.tools.StorageTool", "format",
           "--ignore-formatted", "-t", _cluster_id(), "-c", str(server)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise KafkaSetupError(f"formatting Kafka storage failed:\n{(done.stdout + done.stderr)[-3000:]}")


def _log_flags(settings: Settings) -> list[str]:
    return [f"-Dlog4j2.configurationFile={settings.kafka_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={settings.run_dir}"]


# --- lifecycle ----------------------------------------------------------------------------------------
def managed_pid(settings: Settings) -> int | None:
    """Pid of the broker streamrec started, if it is alive."""
    return process.is_running(NAME, settings, expect=MAIN_CLASS)


def start(settings: Settings) -> int:
    """Start our broker (fetching jars and formatting storage as needed); wait until it answers."""
    host, port = bootstrap_address(settings)
    if not is_local(host):
        raise KafkaSetupError(
            f"no Kafka broker answers at {settings.kafka_bootstrap}, and {host} is not a local address "
            "streamrec could start one on; start that broker or set STREAMREC_KAFKA_BOOTSTRAP=127.0.0.1:9092"
        )
    if port_open(host, port):
        raise KafkaSetupError(
            f"something listens at {host}:{port} but does not answer as a Kafka broker; "
            "free the port or set STREAMREC_KAFKA_BOOTSTRAP to another one"
        )
    java = java_binary()
    libs = ensure_jars(settings)
    controller_port = settings.kafka_controller_port or free_port()
    server = write_config(settings, controller_port)
    format_storage(settings, java, libs, server)
    argv = [java, *settings.kafka_heap_opts.split(), "-XX:+UseG1GC", "-Djava.awt.headless=true",
            *_log_flags(settings), "-cp", f"{libs}/*", MAIN_CLASS, str(server)]
    pid = process.start_detached(NAME, argv, settings, cwd=settings.kafka_dir)
    wait_ready(settings, pid)
    return pid


def wait_ready(settings: Settings, pid: int) -> None:
    """Wait (bounded) until our broker answers; if it dies first, raise with the tail of its log."""

    def ready() -> bool:
        if process.exited(pid):
            raise KafkaSetupError(
                f"Kafka exited during startup; last lines of {process.log_path(NAME, settings)}:\n"
                + process.log_tail(NAME, settings)
            )
        return broker_answers(settings.kafka_bootstrap, timeout_s=2.0)

    try:
        process.wait_until(ready, settings.start_timeout_s, f"Kafka at {settings.kafka_bootstrap}", 0.5)
    except TimeoutError as exc:
        raise KafkaSetupError(
            f"{exc}; it is still running (pid {pid}), see {process.log_path(NAME, settings)}:\n"
            + process.log_tail(NAME, settings, 15)
        ) from exc


# --- topics -------------------------------------------------------------------------------------------
def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, int]:
    """Create the clicks and dead-letter topics and the worker's internal topics if missing.

    Idempotent; an existing topic is left as it is (a warning if clicks has other partitions).
    Returns {topic: partition count}.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streaming.topics import all_topics

    specs = all_topics(settings)
    wanted = {spec.name: spec.partitions for spec in specs}
    admin = _admin(settings.kafka_bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name=spec.name, num_partitions=spec.partitions, replication_factor=1,
                            topic_configs=spec.config)
                   for spec in specs if spec.name not in existing]
        if missing:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # NewTopic list: deprecated in 3.x
                    admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass  # created concurrently
        counts = _partition_counts(admin, list(wanted), timeout_s)
    finally:
        admin.close()
    if counts.get(settings.clicks_topic) != settings.clicks_partitions:
        log.warning("topic %s has %s partitions, settings ask for %d (left unchanged)",
                    settings.clicks_topic, counts.get(settings.clicks_topic), settings.clicks_partitions)
    return counts


def _partition_counts(admin, topics: list[str], timeout_s: float) -> dict[str, int]:  # noqa: ANN001
    """Partition counts, polling briefly: metadata of a just-created topic propagates asynchronously."""
    counts: dict[str, int] = {}

    def known() -> bool:
        counts.clear()
        for desc in admin.describe_topics(topics):
            name = desc.get("topic") or desc.get("name")
            if not desc.get("error_code") and desc.get("partitions"):
                counts[name] = len(desc["partitions"])
        return len(counts) == len(topics)

    process.wait_until(known, timeout_s, f"metadata of topics {topics}", 0.2)
    return counts
