from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_runs_kafka_topics_and_the_three_processes() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["topics"]["command"] == ["topics", "create"]
    for name, command in (("worker", "worker"), ("http", "http"), ("stripe-sink", "stripe-sink")):
        assert services[name]["command"] == [command]
        assert services[name]["build"] == "."
        assert (
            services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        )
    assert (ROOT / "Dockerfile").exists()


def test_the_topic_service_creates_topics_under_the_names_the_processes_use() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    topics = services["topics"]["environment"]
    for name in ("worker", "http", "stripe-sink"):
        environment = services[name]["environment"]
        for variable in ("METERLINE_APP_ID", "METERLINE_TOPIC_PREFIX", "METERLINE_PARTITIONS"):
            assert environment[variable] == topics[variable], (name, variable)


def test_a_stalled_worker_shows_as_unhealthy_in_compose() -> None:
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
