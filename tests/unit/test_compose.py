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
