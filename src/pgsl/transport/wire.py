"""Settings both ends of a channel (gRPC or FLARE) agree on; light enough for the client process to import
without loading the server model or the solver."""

from __future__ import annotations

import torch

SITE_HEADER = "x-pgsl-site"  # identifies a site on an insecure (no-TLS) server only
DEFAULT_MAX_MESSAGE = 64 << 20  # bytes, each way


def message_options(max_message: int) -> list[tuple[str, int]]:
    """gRPC channel/server options that cap a message at ``max_message`` bytes, each way."""
    return [("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message)]


# what a site may send activations and receive gradients in (None: float32, as computed)
WIRE_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "float16": torch.float16,
                                               "bfloat16": torch.bfloat16}


def wire_dtype(name: str, option: str = "wire_dtype") -> torch.dtype | None:
    """The dtype a site's ``option`` names; ValueError for any name not in :data:`WIRE_DTYPES`."""
    if name not in WIRE_DTYPES:
        raise ValueError(f"{option} must be one of {', '.join(WIRE_DTYPES)}, got {name!r}")
    return WIRE_DTYPES[name]
