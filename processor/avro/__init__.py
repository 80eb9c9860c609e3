"""Avro records for ``hl7.accepted`` / ``hl7.deadletter`` (SPEC section 5).

``records`` builds the Avro-shaped dicts (pure) from what the processor read, a
``processor.raw.RawRecord`` (``hl7.raw`` itself is not Avro); ``schemas`` finds and
parses the ``.avsc`` files, and ``codec`` turns dicts into bytes and back
(single-object encoding, or the Confluent wire format with a registry).
"""

__all__: list[str] = []
