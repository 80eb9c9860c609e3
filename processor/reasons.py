"""Reason codes of the decision table (SPEC section 3), in table order.

The enum's string values are the wire values: they appear in ERR segments, the
dead-letter Avro enum and metric labels, so never rename one.
"""

from enum import StrEnum

__all__ = ["Reason", "REASON_CODES"]


class Reason(StrEnum):
    MISSING_METADATA = "MISSING_METADATA"
    PRINCIPAL_UNKNOWN = "PRINCIPAL_UNKNOWN"
    PRINCIPAL_NOT_ACTIVE = "PRINCIPAL_NOT_ACTIVE"
    MALFORMED_HL7 = "MALFORMED_HL7"
    MSH4_MISSING = "MSH4_MISSING"
    MSH4_SYNTAX = "MSH4_SYNTAX"
    UNKNOWN_CONNECTING_ALIAS = "UNKNOWN_CONNECTING_ALIAS"
    UNKNOWN_DATA_CONTROLLER_ALIAS = "UNKNOWN_DATA_CONTROLLER_ALIAS"
    CUSTOMER_NOT_ACTIVE = "CUSTOMER_NOT_ACTIVE"
    PARTNER_NOT_AUTHORISED = "PARTNER_NOT_AUTHORISED"
    CUSTOMER_ALIAS_MISMATCH = "CUSTOMER_ALIAS_MISMATCH"
    DELEGATION_NOT_AUTHORISED = "DELEGATION_NOT_AUTHORISED"
    DUPLICATE = "DUPLICATE"  # row 12: the processor only (a resend of an accepted message)
    PROCESSING_ERROR = "PROCESSING_ERROR"


REASON_CODES: tuple[str, ...] = tuple(r.value for r in Reason)
