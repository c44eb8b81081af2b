"""A real single-node Apache Kafka broker (KRaft, broker+controller) run from Maven Central jars.

There is no Docker engine on the project's machines and no in-memory Kafka for Faust, so the project
fetches the broker itself, formats its storage once and runs `kafka.Kafka` on the machine's Java.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import base64
from dataclasses import dataclass
from pathlib import Path

from autologs.config import Settings

LOG4J2_VERSION = "2.24.3"

POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>autologs</groupId><artifactId>kafka-broker-fetch</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="{log}" filePattern="{log}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class BrokerError(RuntimeError):
    """Raised with a message that says what to do next."""


@dataclass(frozen=True)
class BrokerPaths:
    home: Path  # cache folder of one Kafka version, outside the repository
    state: Path  # per-project folder: config, storage, pid, log

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def config(self) -> Path:
        return self.state / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.state / "log4j2.xml"

    @property
    def storage(self) -> Path:
        return self.state / "kraft-logs"

    @property
    def pid_file(self) -> Path:
        return self.state / "broker.pid"

    @property
    def log(self) -> Path:
        return self.state / "broker.log"

    @property
    def stdout(self) -> Path:
        return self.state / "broker.out"


def paths(settings: Settings) -> BrokerPaths:
    return BrokerPaths(
        home=settings.cache_dir / f"kafka-{settings.kafka_version}",
        state=(settings.data_dir / "kafka").resolve(),
    )


def bootstrap_address(settings: Settings) -> str:
    return f"127.0.0.1:{settings.kafka_port}"


def ensure_jars(settings: Settings, out=sys.stderr) -> Path:
    """Resolve the broker and its dependencies with Maven once; later runs reuse the cache."""
    p = paths(settings)
    marker = p.home / ".complete"
    if marker.exists():
        return p.libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is not on PATH: install it (apt-get install maven) and retry.")
    print(f"Fetching Apache Kafka {settings.kafka_version} from Maven Central into {p.home} (once)...", file=out)
    p.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(POM_TEMPLATE.format(kafka=settings.kafka_version, log4j=LOG4J2_VERSION))
        staging = p.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = ["mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BrokerError(
                "Maven could not resolve the Kafka broker:\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
                + "\nCheck that Maven Central is reachable, or set AUTOLOGS_KAFKA_VERSION to another 4.x."
            )
        # Kafka 4 brings slf4j 1.7; the log4j binding for it is log4j-slf4j-impl, drop any slf4j2 one.
        for jar in staging.glob("log4j-slf4j2-impl-*.jar"):
            jar.unlink()
        shutil.rmtree(p.libs, ignore_errors=True)
        staging.rename(p.libs)
    marker.write_text(settings.kafka_version)
    return p.libs


def _classpath(libs: Path) -> str:
    return os.pathsep.join(sorted(str(j) for j in libs.glob("*.jar")))


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java is not on PATH: install a JDK 17+ (apt-get install openjdk-17-jre-headless).")
    return java


def _write_config(settings: Settings, p: BrokerPaths) -> None:
    p.state.mkdir(parents=True, exist_ok=True)
    port, cport = settings.kafka_port, settings.kafka_controller_port
    p.config.write_text("\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={p.storage}",
        f"num.partitions={settings.topic_partitions}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "message.max.bytes=10485760",
        "",
    ]))
    p.log4j.write_text(LOG4J2_XML.format(log=p.log))


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, as Kafka's own `Uuid.randomUuid()`, which also
    never starts one with '-': the storage tool would read "-t -xyz" as a missing value (1 start in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(settings: Settings, p: BrokerPaths, libs: Path) -> None:
    if (p.storage / "meta.properties").exists():
        return
    cluster_id = new_cluster_id()
    cmd = [_java(), "-Xmx256m", f"-Dlog4j2.configurationFile={p.log4j}", "-cp", _classpath(libs),
           "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(p.config)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"Formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}\n"
                          f"Remove {p.storage} and retry.")


def _read_pid(p: BrokerPaths) -> int | None:
    try:
        pid = int(p.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split()[2] == "Z":
                return None
    except OSError:
        pass
    return pid


def ping(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when the broker answers a metadata request."""
    import logging

    from aiokafka import AIOKafkaClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "connection refused" is the answer here

    async def _ping() -> bool:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            await asyncio.wait_for(client.fetch_all_metadata(), timeout)
            return True
        except Exception:
            return False
        finally:
            await client.close()

    return asyncio.run(_ping())


def start(settings: Settings, wait_s: float = 90.0, out=sys.stderr) -> str:
    """Start the broker unless this project's broker already runs; return the bootstrap address."""
    p = paths(settings)
    address = bootstrap_address(settings)
    pid = _read_pid(p)
    if pid is not None:
        if _wait_ready(address, pid, p, 30.0):
            return address
        raise BrokerError(f"The broker (pid {pid}) runs but does not answer at {address}; see {p.log}. "
                          "Run `autologs broker stop` and start again.")
    if ping(address, 1.0):
        raise BrokerError(f"Something else already answers at {address}. Stop it, or set "
                          "AUTOLOGS_KAFKA_PORT to a free port (and AUTOLOGS_KAFKA_BOOTSTRAP to match).")
    libs = ensure_jars(settings, out)
    _write_config(settings, p)
    _format_storage(settings, p, libs)
    cmd = [_java(), f"-Xmx{settings.kafka_heap}", f"-Xms{settings.kafka_heap}", "-XX:+UseG1GC",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={p.log4j}",
           f"-Dkafka.logs.dir={p.state}", "-cp", _classpath(libs), "kafka.Kafka", str(p.config)]
    print(f"Starting Kafka {settings.kafka_version} at {address} (log: {p.log})...", file=out)
    with open(p.stdout, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=p.state)
    p.pid_file.write_text(str(proc.pid))
    if not _wait_ready(address, proc.pid, p, wait_s):
        tail = p.stdout.read_text(errors="replace")[-2000:] if p.stdout.exists() else ""
        stop(settings, out=out)
        raise BrokerError(f"Kafka did not answer at {address} within {wait_s:.0f}s. Last output:\n{tail}\n"
                          f"See {p.log}.")
    return address


def _wait_ready(address: str, pid: int, p: BrokerPaths, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _read_pid(p) != pid:
            return False
        if ping(address, 2.0):
            return True
        time.sleep(0.5)
    return False


def status(settings: Settings) -> tuple[int | None, bool]:
    """(pid of this project's broker or None, whether the configured address answers)."""
    return _read_pid(paths(settings)), ping(bootstrap_address(settings), 2.0)


def stop(settings: Settings, timeout_s: float = 60.0, out=sys.stderr) -> bool:
    """Stop only the broker this project started; wait for it to exit. False when none ran."""
    p = paths(settings)
    pid = _read_pid(p)
    if pid is None:
        p.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _read_pid(p) == pid:
        _reap(pid)
        time.sleep(0.2)
    if _read_pid(p) == pid:
        print(f"Kafka (pid {pid}) did not stop within {timeout_s:.0f}s; killing it.", file=out)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
    p.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
