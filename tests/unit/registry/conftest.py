"""Registry test fixtures: cheap argon2id hashes and a builder for registry documents.

Cheap parameters (m=8 KiB, t=1, p=1) keep the suite fast; the production
parameters are asserted separately in test_registry_credentials.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import cheap_hash

SAMPLE = Path(__file__).parent / "data" / "sample_registry.yaml"


def base_document() -> dict[str, Any]:
    """A small valid registry as plain data (tests mutate a deep copy)."""
    return {
        "customers": [
            {
                "id": "trust-1",
                "alias": "trustalias",
                "active": True,
                "authorised_connectors": [],
                "login": {
                    "username": "trust_user",
                    "password_hash": cheap_hash("pw-trust"),
                    "allowed_networks": ["203.0.113.0/24"],
                },
            },
            {"id": "gp-1", "alias": "gpalias", "authorised_connectors": ["trust-1"]},
        ],
        "partners": [
            {
                "id": "mailco",
                "active": True,
                "username": "partner_mailco",
                "password_hash": cheap_hash("pw-mailco"),
                "allowed_networks": [],
                "authorised_by": ["trust-1"],
            }
        ],
    }


@pytest.fixture
def document() -> dict[str, Any]:
    return copy.deepcopy(base_document())


@pytest.fixture
def to_bytes() -> Callable[[dict[str, Any]], bytes]:
    def dump(doc: dict[str, Any]) -> bytes:
        return yaml.safe_dump(doc, sort_keys=False).encode()

    return dump


@pytest.fixture
def hash_of() -> Callable[[str], str]:
    return cheap_hash


@pytest.fixture
def sample_path() -> Path:
    return SAMPLE
