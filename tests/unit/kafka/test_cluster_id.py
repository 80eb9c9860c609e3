"""Cluster ids handed to ``kafka-storage format -t``: never read as an option."""
from __future__ import annotations

from base64 import urlsafe_b64decode

from processor.kafka.local_broker import new_cluster_id


def test_an_id_starting_with_a_dash_is_drawn_again() -> None:
    draws = iter([b"\xf8" + bytes(15), b"\x01" * 16])  # first encodes to "-AAA…"
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_ids_are_22_url_safe_characters_of_16_bytes() -> None:
    for _ in range(2000):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(urlsafe_b64decode(cluster_id + "==")) == 16
