"""Who may send what: the registry model, its loader and hot reload, credentials, networks.

Import the submodules directly in hot paths; this package re-exports the names
most callers need.
"""

from processor.registry.loader import (
    DEMO_REGISTRY_PATH,
    load_registry,
    parse_registry,
    registry_version,
)
from processor.registry.model import Customer, Login, Partner, Principal, PrincipalType, Registry

__all__ = [
    "DEMO_REGISTRY_PATH",
    "Customer",
    "Login",
    "Partner",
    "Principal",
    "PrincipalType",
    "Registry",
    "load_registry",
    "parse_registry",
    "registry_version",
]
