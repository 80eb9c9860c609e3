"""The MSH header type: what the gateway needs from MSH, read by name.

Built by :mod:`processor.hl7.header` (``read_header`` / ``salvage_header``), one per message.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MshHeader", "MshValues"]


#: ``MshHeader.values``: its 23 named values, in this order (built by ``_msh_values``, read
#: by name through MshHeader's properties; mypy checks each property against its slot).
MshValues = tuple[
    str,  # 0 field_separator
    str,  # 1 component_separator
    str,  # 2 repetition_separator
    str,  # 3 escape_character
    str,  # 4 subcomponent_separator
    str | None,  # 5 sending_application
    str,  # 6 sending_application_raw
    str,  # 7 sending_facility_raw
    str,  # 8 msh4_namespace_id
    str,  # 9 receiving_application_raw
    str,  # 10 receiving_facility_raw
    str,  # 11 message_datetime
    str,  # 12 message_type
    str | None,  # 13 trigger_event
    str | None,  # 14 message_structure
    str,  # 15 message_control_id
    str,  # 16 processing_id_raw
    str,  # 17 version_id
    str,  # 18 version_raw
    str | None,  # 19 accept_ack_type
    str | None,  # 20 application_ack_type
    str | None,  # 21 character_set
    str,  # 22 segment_terminator
]


@dataclass(frozen=True, slots=True)
class MshHeader:
    """What the gateway needs from MSH; ``*_raw`` values are as received (escaped).

    Read it by name (``header.message_type``, ...): one read-only property per value. It
    stores one field, ``values`` (see ``MshValues``), because a frozen dataclass ``__init__``
    pays about 0.1 µs per field it sets and ``read_header`` builds one header per message
    (23 stored fields cost 1.8x on bench_header, see docs/performance.md). Equality, hashing,
    repr and immutability are the dataclass's own, over those 23 values. Assigning or
    deleting raises FrozenInstanceError for ``values`` and TypeError for a property name
    (CPython 3.11-3.13: the frozen ``__setattr__`` of a slotted dataclass mishandles names
    that are not fields).
    """

    values: MshValues

    @property
    def field_separator(self) -> str:
        """MSH-1."""
        return self.values[0]

    @property
    def component_separator(self) -> str:
        """MSH-2, first character."""
        return self.values[1]

    @property
    def repetition_separator(self) -> str:
        """MSH-2, second character."""
        return self.values[2]

    @property
    def escape_character(self) -> str:
        """MSH-2, third character."""
        return self.values[3]

    @property
    def subcomponent_separator(self) -> str:
        """MSH-2, fourth character."""
        return self.values[4]

    @property
    def sending_application(self) -> str | None:
        """MSH-3.1, unescaped; ``None`` when empty."""
        return self.values[5]

    @property
    def sending_application_raw(self) -> str:
        """MSH-3 as received."""
        return self.values[6]

    @property
    def sending_facility_raw(self) -> str:
        """MSH-4 as received."""
        return self.values[7]

    @property
    def msh4_namespace_id(self) -> str:
        """MSH-4.1, unescaped (the aliases, see ``processor.hl7.msh4``)."""
        return self.values[8]

    @property
    def receiving_application_raw(self) -> str:
        """MSH-5 as received."""
        return self.values[9]

    @property
    def receiving_facility_raw(self) -> str:
        """MSH-6 as received."""
        return self.values[10]

    @property
    def message_datetime(self) -> str:
        """MSH-7 as received."""
        return self.values[11]

    @property
    def message_type(self) -> str:
        """MSH-9.1, unescaped."""
        return self.values[12]

    @property
    def trigger_event(self) -> str | None:
        """MSH-9.2, unescaped; ``None`` when empty."""
        return self.values[13]

    @property
    def message_structure(self) -> str | None:
        """MSH-9.3, unescaped; ``None`` when empty."""
        return self.values[14]

    @property
    def message_control_id(self) -> str:
        """MSH-10, unescaped."""
        return self.values[15]

    @property
    def processing_id_raw(self) -> str:
        """MSH-11 as received."""
        return self.values[16]

    @property
    def version_id(self) -> str:
        """MSH-12.1, unescaped."""
        return self.values[17]

    @property
    def version_raw(self) -> str:
        """MSH-12 as received."""
        return self.values[18]

    @property
    def accept_ack_type(self) -> str | None:
        """MSH-15, unescaped; ``None`` when empty."""
        return self.values[19]

    @property
    def application_ack_type(self) -> str | None:
        """MSH-16, unescaped; ``None`` when empty."""
        return self.values[20]

    @property
    def character_set(self) -> str | None:
        """MSH-18.1 (first repetition), unescaped; ``None`` when empty."""
        return self.values[21]

    @property
    def segment_terminator(self) -> str:
        """CR, LF or CR LF: the terminator found at the end of MSH."""
        return self.values[22]

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 non-empty: the sender asked for enhanced acknowledgement (CA/CE/CR)."""
        return bool(self.values[19])

    @property
    def encoding_characters(self) -> str:
        """MSH-2 without a truncation character."""
        v = self.values
        return v[1] + v[2] + v[3] + v[4]
