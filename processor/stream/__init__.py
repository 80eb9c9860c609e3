"""The exactly-once stream processor: ``hl7.raw`` -> ``hl7.accepted`` / ``hl7.deadletter``.

``routing`` is the pure core (one raw record -> one encoded output record);
``processor`` the Kafka shell (consumer + transactional producer);
``txn_errors`` classifies transactional failures; ``lag`` feeds the lag gauge;
``metrics_server`` serves ``/metrics``, ``/livez`` and ``/readyz``.

Embedding (e.g. ``hl7-processor run``)::

    proc = StreamProcessor(settings, watcher)   # watcher: RegistryWatcher, or a callable
    threading.Thread(target=proc.run).start()   # run() blocks; raises StreamFatalError
    ...
    proc.stop()                                 # thread-safe; run() commits, leaves the group
"""

from processor.stream.processor import RegistrySource, StreamFatalError, StreamProcessor

__all__ = ["StreamProcessor", "StreamFatalError", "RegistrySource"]
