from __future__ import annotations

from streams.topics import Topics


def test_every_design_topic_is_declared_with_its_cleanup_policy() -> None:
    topics = {t.name: t for t in Topics().all()}
    for name in (
        "stripe.events",
        "measurements",
        "measurements.rejected",
        "catalog",
        "bill.commands",
        "bills",
        "stripe.sync",
    ):
        assert name in topics
    assert topics["catalog"].config == {"cleanup.policy": "compact"}
    assert topics["stripe.sync"].config == {"cleanup.policy": "compact"}
    assert "cleanup.policy" not in topics["measurements"].config


def test_per_account_topics_share_the_configured_partition_count() -> None:
    topics = {t.spec.base: t for t in Topics(prefix="acme.", partitions=12).all()}
    for base in ("stripe.events", "measurements", "bill.commands", "bills"):
        assert topics[base].partitions == 12
        assert topics[base].name == f"acme.{base}"
    assert topics["catalog"].partitions == 1
