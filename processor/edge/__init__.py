"""The edge receiver: authenticated HTTP / SOAP and MLLP-over-TLS intake of HL7 v2 into ``hl7.raw``.

``app`` (Starlette routes), ``basic_login`` + ``auth`` (Basic + failed-login limiter),
``replies`` (HTTP answers), ``intake`` (pure request -> record + ACK), ``pipeline`` (the
assess / store / ACK step every transport shares), ``publisher`` (async bridge to one
idempotent producer), ``mllp`` (the MLLP listener) with ``mllp_frames`` (pure framing) and
``mllp_tls`` (server context, reload, fingerprints), ``server`` (uvicorn runner, standalone
or embedded; it binds the MLLP socket too).
"""

__all__: list[str] = []
