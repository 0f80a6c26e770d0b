"""A single-node Apache Kafka broker (KRaft) for development, tests, benchmarks and the demo.

The official broker jars come from Maven Central, resolved by Maven into a cache
directory that later runs reuse. The broker runs detached from the JVM's `kafka.Kafka`
main class, bound to loopback only, with settings that make a one-node cluster fast
(no initial rebalance delay, replication factor 1 for internal topics).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from connectors.waiting import eventually
from streams.kafka_access import Kafka, client_config

log = logging.getLogger(__name__)

LOG4J2_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"

POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.meterline</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2_CONFIG = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
      - name: kafka.server.KafkaRaftServer
        level: INFO
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


class BrokerError(RuntimeError):
    """The local broker cannot be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    reachable: bool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH: {hint}")
    return path


class KafkaJars:
    """The broker's runtime classpath for one Kafka version, cached on disk."""

    def __init__(self, version: str, cache_dir: Path) -> None:
        self.version = version
        self.home = cache_dir / f"kafka-{version}"
        self.libs = self.home / "libs"

    @property
    def cached(self) -> bool:
        return (self.libs / ".complete").exists()

    def ensure(self) -> Path:
        """Resolve the jars with Maven unless cached; return the libs directory."""
        if self.cached:
            return self.libs
        mvn = _require("mvn", "install Apache Maven (apt-get install maven) to fetch Kafka")
        _require("java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
        self.home.mkdir(parents=True, exist_ok=True)
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        pom = self.home / "pom.xml"
        pom.write_text(
            POM_TEMPLATE.format(kafka=self.version, slf4j=SLF4J_VERSION, log4j=LOG4J2_VERSION)
        )
        log.info("fetching Apache Kafka %s jars with Maven into %s", self.version, self.libs)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise BrokerError(f"Maven could not fetch Kafka {self.version}:\n" + "\n".join(detail))
        (staging / ".complete").write_text(self.version)
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        return self.libs

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1:`port`, its state in `data_dir`."""

    def __init__(
        self,
        *,
        port: int = 9092,
        data_dir: Path,
        version: str = "4.1.1",
        cache_dir: Path,
        controller_port: int | None = None,
        heap: str = "1g",
        sasl: SaslListener | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.port = port
        self.controller_port = controller_port
        self.sasl = sasl
        self.tls = tls
        self.data_dir = data_dir.resolve()
        self.jars = KafkaJars(version, cache_dir)
        self.heap = heap
        # The broker this object started (detached, stopped by pid): kept to be reaped, as
        # a Popen dropped while its child runs is a leak to Python (ResourceWarning).
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL listener (with `sasl=`), beside the PLAINTEXT one."""
        assert self.sasl is not None, "this broker has no SASL listener"
        return f"127.0.0.1:{self.sasl.port}"

    @property
    def tls_bootstrap(self) -> str:
        """The TLS listener (with `tls=`), beside the PLAINTEXT one."""
        assert self.tls is not None, "this broker has no TLS listener"
        return f"127.0.0.1:{self.tls.port}"

    def _extra_listeners(self) -> list[SaslListener | TlsListener]:
        return [listener for listener in (self.sasl, self.tls) if listener is not None]

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        reachable = pid is not None and metadata_ok(self.bootstrap, timeout=2.0)
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.data_dir, reachable)

    def start(self, timeout: float = 60.0) -> BrokerStatus:
        """Fetch (if needed), format (first time), start detached, wait for metadata."""
        java = _require(
            "java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
        )
        if self.pid() is not None:
            if metadata_ok(self.bootstrap, timeout=5.0):
                return self.status()
            raise BrokerError(
                f"broker pid {self.pid()} is running but not answering on {self.bootstrap}"
            )
        if not port_is_free(self.port):
            raise BrokerError(
                f"port {self.port} is taken by another process; choose another with --port"
            )
        controller_port = self.controller_port or _controller_port_for(self.port)
        taken = controller_port in {listener.port for listener in self._extra_listeners()}
        if taken or not port_is_free(controller_port):
            if self.controller_port is not None:
                raise BrokerError(f"controller port {controller_port} is taken")
            controller_port = free_port()  # internal to the broker: any free port will do
        self.jars.ensure()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(controller_port)
        if not (self.data_dir / "data" / "meta.properties").exists():
            self._format(java)
        with open(self.log_file, "ab") as log_out:
            process = subprocess.Popen(
                [*self._java_command(java), "kafka.Kafka", str(self.properties_file)],
                stdout=log_out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # detached: survives the command that started it
                cwd=self.data_dir,
            )
        self._process = process
        self.pid_file.write_text(str(process.pid))

        def answering() -> bool:
            if process.poll() is not None:
                raise BrokerError(
                    f"broker exited with {process.returncode}; last log lines:\n{self.log_tail()}"
                )
            return metadata_ok(self.bootstrap, timeout=1.0)

        try:
            eventually(answering, timeout, 0.2, "the broker to answer")
        except TimeoutError:
            self.stop()
            raise BrokerError(
                f"broker did not answer within {timeout:.0f}s:\n{self.log_tail()}"
            ) from None
        return self.status()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop cleanly (SIGTERM = controlled shutdown), SIGKILL after `timeout`."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            self._reap()
            return False
        os.kill(pid, signal.SIGTERM)
        try:
            eventually(lambda: not _alive(pid), timeout, 0.1, f"broker pid {pid} to stop")
        except TimeoutError:
            log.warning("broker pid %d ignored SIGTERM for %.0fs; killing", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        self._reap()
        return True

    def _reap(self, timeout: float = 10.0) -> None:
        # The JVM shows as a zombie as soon as its main thread ends; it can be reaped once
        # its other threads have ended too.
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout)
                self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _java_command(self, java: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            self.jars.classpath,
        ]

    def _write_config(self, controller_port: int) -> None:
        data = self.data_dir / "data"
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        for extra in self._extra_listeners():
            listeners += f",{extra.protocol}://127.0.0.1:{extra.port}"
            protocols += f",{extra.protocol}:{extra.protocol}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"{listeners},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": protocols,
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            # Topics are created explicitly (`meterline topics create`); auto-creation
            # would race faust's subscription and pick the wrong partition count.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.hours": "-1",
            "log.cleaner.backoff.ms": "5000",
        }
        for extra in self._extra_listeners():
            properties.update(extra.broker_properties())
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2_CONFIG)

    def _format(self, java: str) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                *self._java_command(java),
                "kafka.tools.StorageTool",
                "format",
                # `=`: a random id may start with '-', which argparse takes for an option
                f"--cluster-id={cluster_id}",
                f"--config={self.properties_file}",
                *(arg for extra in self._extra_listeners() for arg in extra.format_arguments()),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the storage directory failed:\n{result.stdout}{result.stderr}"
            )


@dataclass(frozen=True)
class SaslListener:
    """A SASL_PLAINTEXT listener and its users: SCRAM users are created at format time
    (KRaft), PLAIN users are listed in the listener's JAAS configuration."""

    port: int
    users: dict[str, str]  # name -> password
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    protocol = "SASL_PLAINTEXT"

    def broker_properties(self) -> dict[str, str]:
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule required " + "".join(
            f'user_{name}="{password}" ' for name, password in self.users.items()
        )
        properties = {"sasl.enabled.mechanisms": ",".join(self.mechanisms)}
        for mechanism in self.mechanisms:
            jaas = plain.rstrip() + ";" if mechanism == "PLAIN" else scram
            properties[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"] = jaas
        return properties

    def format_arguments(self) -> list[str]:
        return [
            f"--add-scram={mechanism}=[name={name},password={password}]"
            for mechanism in self.mechanisms
            if mechanism.startswith("SCRAM-")
            for name, password in self.users.items()
        ]


@dataclass(frozen=True)
class TlsListener:
    """An SSL listener that requires a client certificate (mTLS), from PEM files: the
    broker's key and certificate chain in one file, and the CA clients are checked
    against."""

    port: int
    keystore: Path  # PEM: the broker's private key (PKCS#8) and certificate chain
    truststore: Path  # PEM: the CA of client certificates
    protocol = "SSL"

    def broker_properties(self) -> dict[str, str]:
        return {
            "listener.name.ssl.ssl.keystore.type": "PEM",
            "listener.name.ssl.ssl.keystore.location": str(self.keystore),
            "listener.name.ssl.ssl.truststore.type": "PEM",
            "listener.name.ssl.ssl.truststore.location": str(self.truststore),
            "listener.name.ssl.ssl.client.auth": "required",
        }

    def format_arguments(self) -> list[str]:
        return []


def _controller_port_for(port: int) -> int:
    return port + 1 if port < 65535 else port - 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if we can.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def metadata_ok(kafka: Kafka, timeout: float = 2.0) -> bool:
    """True when a broker of `kafka` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(kafka, log_level=0, logger=QUIET_LOGGER))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(metadata.brokers)


class _Quiet(logging.Logger):
    def __init__(self) -> None:
        super().__init__("librdkafka.quiet", level=logging.CRITICAL)


QUIET_LOGGER = _Quiet()  # a librdkafka `logger` that drops its log lines
