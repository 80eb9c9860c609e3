"""HL7 Partner Gateway: edge receiver and exactly-once stream processor.

The pure core (``processor.hl7``, ``processor.registry``, ``processor.decision``,
``processor.avro``) has no I/O; the shells (``processor.edge``, ``processor.stream``,
``processor.kafka``) wrap it with HTTP, Kafka, files and signals.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
