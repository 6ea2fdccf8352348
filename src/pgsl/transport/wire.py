"""Settings both ends of the gRPC channel agree on; light enough for the client process to import
without loading the server model or the solver."""

from __future__ import annotations

SITE_HEADER = "x-pgsl-site"  # identifies a site on an insecure (no-TLS) server only
DEFAULT_MAX_MESSAGE = 64 << 20  # bytes, each way


def message_options(max_message: int) -> list[tuple[str, int]]:
    """gRPC channel/server options that cap a message at ``max_message`` bytes, each way."""
    return [("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message)]
