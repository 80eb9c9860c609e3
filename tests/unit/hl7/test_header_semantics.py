"""MshHeader and Msh4Aliases are plain frozen dataclasses; cached results are equal values."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from processor.hl7.header import MshHeader, read_header
from processor.hl7.msh4 import Msh4Aliases, parse_msh4
from tests.corpus import load, names


@pytest.mark.parametrize("name", names())
def test_header_behaves_like_a_frozen_dataclass(name: str) -> None:
    h = read_header(load(name))
    assert dataclasses.is_dataclass(h)
    assert len(dataclasses.fields(h)) == 23 and not hasattr(h, "__dict__")
    rebuilt = MshHeader(**dataclasses.asdict(h))
    assert rebuilt == h and not (rebuilt != h) and hash(rebuilt) == hash(h)
    assert hash(h) == hash(tuple(getattr(h, f.name) for f in dataclasses.fields(h)))
    assert repr(h).startswith("MshHeader(field_separator=")
    assert pickle.loads(pickle.dumps(h)) == h
    other = dataclasses.replace(h, message_control_id=h.message_control_id + "X")
    assert other != h and other.message_control_id.endswith("X")
    assert h != object() and h != "MSH"
    with pytest.raises(TypeError):
        _ = h < other  # type: ignore[operator]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.message_type = "X"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del h.message_type  # type: ignore[misc]


def test_msh4_results_are_plain_dataclass_values_and_cached_results_are_equal() -> None:
    first = parse_msh4("trustalias{trustalias}", customer_principal=False)
    again = parse_msh4("trustalias{trustalias}", customer_principal=False)
    assert first == again == Msh4Aliases("trustalias", "trustalias", False)
    legacy = parse_msh4("trustalias", customer_principal=True)
    assert legacy == Msh4Aliases("trustalias", "trustalias", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        legacy.legacy = False  # type: ignore[misc]


def test_msh4_legacy_value_seen_from_a_customer_is_still_refused_for_a_partner() -> None:
    from processor.errors import Msh4Error

    assert parse_msh4("plainalias", customer_principal=True, own_alias="own").legacy
    with pytest.raises(Msh4Error):
        parse_msh4("plainalias", customer_principal=False)


def test_msh4_legacy_result_is_never_served_to_another_customer() -> None:
    first = parse_msh4("RXH01", customer_principal=True, own_alias="trustalias")
    second = parse_msh4("RXH01", customer_principal=True, own_alias="gpalias")
    assert first == Msh4Aliases("trustalias", "trustalias", True)
    assert second == Msh4Aliases("gpalias", "gpalias", True)
