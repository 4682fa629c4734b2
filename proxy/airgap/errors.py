"""The errors of air-gapped transfer. Each message says what is wrong, with which value, and
what to do; `proxy.cli.main` prints it on one line and exits 1."""

from __future__ import annotations

from proxy.errors import HubwardenError


class KeysError(HubwardenError):
    """The signing key or the trust store cannot do what was asked (missing, unsafe, duplicate,
    unreadable)."""


class BundleError(HubwardenError):
    """A bundle cannot be written, or is refused on reading (malformed, unsafe, altered,
    truncated). The message names the member or digest at fault."""


class SignatureError(BundleError):
    """A bundle's signature is malformed, from no trusted key, or does not match the bundle."""
