"""The exactly-once stream processor: ``hl7.raw`` -> ``hl7.accepted`` / ``hl7.deadletter``.

``routing`` is the pure core (one raw record -> one encoded output record);
``records`` turns a consumed message into the core's input; ``oversize`` decides what
to do with an output Kafka refuses as too large; ``dedupe`` (the store), ``dedupe_codec``
(its changelog records) and ``dedupe_step`` (the loop's side) are decision row 12, a resend
of an accepted message; ``processor`` is the loop;
:mod:`processor.kafka.session` the Kafka session (consumer + transactional producer);
``txn_errors`` classifies Kafka failures; ``lag`` feeds the lag gauge;
``metrics_server`` serves ``/metrics``, ``/livez`` and ``/readyz``.

Embedding (e.g. ``hl7-processor run``)::

    proc = StreamProcessor(settings, watcher)   # watcher: RegistryWatcher, or a callable
    threading.Thread(target=proc.run).start()   # run() blocks; raises StreamFatalError
    ...
    proc.stop()                                 # thread-safe; run() commits, leaves the group
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamProcessor", "StreamFatalError", "RegistrySource"]


def __getattr__(name: str) -> Any:
    # Lazy: processor.kafka.session imports processor.stream.txn_errors, and this package
    # must not import the processor (which imports the session) just to get there.
    if name in __all__:
        from processor.stream import processor

        return getattr(processor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
