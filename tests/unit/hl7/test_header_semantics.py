"""MshHeader and Msh4Aliases are plain frozen dataclasses; cached results are equal values."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from processor.hl7.header import MshHeader, read_header
from processor.hl7.msh4 import Msh4Aliases, parse_msh4
from tests.corpus import load, names


#: MshHeader's named values in the order of ``MshHeader.values`` (written out again here:
#: the test of the properties against the slots they read).
ORDER = (
    "field_separator",
    "component_separator",
    "repetition_separator",
    "escape_character",
    "subcomponent_separator",
    "sending_application",
    "sending_application_raw",
    "sending_facility_raw",
    "msh4_namespace_id",
    "receiving_application_raw",
    "receiving_facility_raw",
    "message_datetime",
    "message_type",
    "trigger_event",
    "message_structure",
    "message_control_id",
    "processing_id_raw",
    "version_id",
    "version_raw",
    "accept_ack_type",
    "application_ack_type",
    "character_set",
    "segment_terminator",
)


def test_each_name_reads_its_own_value() -> None:
    values = tuple(f"v{i}" for i in range(len(ORDER)))
    h = MshHeader(values)  # type: ignore[arg-type]
    assert [getattr(h, name) for name in ORDER] == list(values)
    names_ = {n for n, v in vars(MshHeader).items() if isinstance(v, property)}
    assert names_ == set(ORDER) | {"enhanced_mode", "encoding_characters"}
    assert h.encoding_characters == "v1v2v3v4" and h.enhanced_mode


@pytest.mark.parametrize("name", names())
def test_header_behaves_like_a_frozen_dataclass(name: str) -> None:
    h = read_header(load(name))
    assert dataclasses.is_dataclass(h)
    assert [f.name for f in dataclasses.fields(h)] == ["values"] and not hasattr(h, "__dict__")
    assert len(h.values) == len(ORDER) and type(h.values) is tuple
    rebuilt = MshHeader(**dataclasses.asdict(h))
    assert rebuilt == h and not (rebuilt != h) and hash(rebuilt) == hash(h)
    assert hash(h) == hash((h.values,))
    assert repr(h).startswith("MshHeader(values=(") and repr(h.message_control_id) in repr(h)
    assert pickle.loads(pickle.dumps(h)) == h
    i = ORDER.index("message_control_id")
    other = dataclasses.replace(h, values=(*h.values[:i], h.message_control_id + "X", *h.values[i + 1 :]))
    assert other != h and other.message_control_id.endswith("X")
    assert h != object() and h != "MSH" and h != h.values
    with pytest.raises(TypeError):
        _ = h < other  # type: ignore[operator]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.values = other.values  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del h.values  # type: ignore[misc]
    # A property name: TypeError on CPython 3.11-3.13 (the frozen __setattr__ of a slotted
    # dataclass mishandles names that are not fields); AttributeError would do as well.
    with pytest.raises((AttributeError, TypeError)):
        h.message_type = "X"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        del h.message_type  # type: ignore[misc]
    assert h == rebuilt


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
