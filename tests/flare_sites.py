"""A FLARE site for the tests: before training honestly it sends the server malformed steps
through FLARE and records how each was refused (``refusals`` in its report)."""

from __future__ import annotations

from typing import Any

import torch
from nvflare.collab import collab

from pgsl.flare.channel import FlareChannel
from pgsl.flare.site_app import FlareSite
from pgsl.split.messages import Activations
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport.client import TransportError
from pgsl.transport.codec import encode_request, encode_tensor

WIDTH = 8  # tests/tiny.toml's model.width


def _malformed() -> list[bytes]:
    nan = encode_request(Activations(1, torch.full((2, WIDTH, 8, 8), float("nan")), torch.tensor([0, 1])),
                         train=True)
    shape = encode_request(Activations(1, torch.randn(2, WIDTH + 3, 8, 8), torch.tensor([0, 1])),
                           train=True)
    labels = encode_request(Activations(1, torch.randn(2, WIDTH, 8, 8), torch.tensor([0, 99])),
                            train=True)
    truncated = pb.StepRequest(step=1, train=True, activations=pb.Tensor(
        dtype="float32", shape=[2, WIDTH, 8, 8], data=b"\0" * 12))
    garbage = encode_tensor(torch.zeros(3)).SerializeToString() + b"\xff\xff\xff"
    return [nan.SerializeToString(), shape.SerializeToString(), labels.SerializeToString(),
            truncated.SerializeToString(), garbage]


class MalformedFirstSite(FlareSite):
    @collab.publish
    def train(self) -> dict[str, Any]:
        channel = FlareChannel(timeout=60.0)
        refusals = []
        for raw in _malformed():
            try:
                channel._call("step", raw)
                refusals.append("accepted")
            except TransportError as e:
                refusals.append(f"{e.code.name}: {e.details}")
        report = super().train()
        report["refusals"] = refusals
        return report
