"""The edge receiver: authenticated HTTP / SOAP intake of HL7 v2 into ``hl7.raw``.

``app`` (Starlette routes), ``auth`` (Basic + failed-login limiter), ``intake``
(pure request -> record + ACK), ``publisher`` (async bridge to one idempotent
producer), ``server`` (uvicorn runner, standalone or embedded).
"""

__all__: list[str] = []
