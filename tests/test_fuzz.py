"""Fuzz the server's request decoder over a real gRPC connection: 10,000 random and mutated
requests, every one answered with a status, none crashing the server or reaching a server fault
(INTERNAL from the service), none updating the model unless the request was valid."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import grpc
import pytest
import torch

from pgsl.config import load_preset
from pgsl.server.party import ServerParty
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport.codec import encode_tensor
from pgsl.transport.server import SplitLearningService, serve
from pgsl.transport.wire import SITE_HEADER

TINY = str(Path(__file__).parent / "tiny.toml")
N_REQUESTS = 10_000


def random_tensor(rng: random.Random) -> pb.Tensor:
    dtype = rng.choice(["float32", "float16", "bfloat16", "int64", "float64", "", "x" * 40])
    shape = [rng.choice([-1, 0, 1, 2, 3, 8, 14, 1 << 20, 1 << 40]) for _ in range(rng.randint(0, 5))]
    size = rng.choice([0, 1, 7, 64, 3136, 12544])
    return pb.Tensor(dtype=dtype, shape=shape, data=rng.randbytes(size))


def valid_request(rng: random.Random, step: int) -> pb.StepRequest:
    b = rng.randint(1, 4)
    return pb.StepRequest(step=step, train=True, activations=encode_tensor(torch.randn(b, 8, 6, 6)),
                          labels=encode_tensor(torch.randint(0, 3, (b,))))


def fuzz_case(rng: random.Random, step: int) -> bytes:
    kind = rng.random()
    if kind < 0.05:
        return valid_request(rng, step).SerializeToString()
    if kind < 0.5:  # well-formed protobuf, arbitrary content
        req = pb.StepRequest(step=rng.choice([0, step, step + 1, 2**63]), train=rng.random() < 0.7,
                             reply_dtype=rng.choice(["", "float16", "int64", "bogus"]))
        if rng.random() < 0.9:
            req.activations.CopyFrom(random_tensor(rng))
        if rng.random() < 0.7:
            req.labels.CopyFrom(random_tensor(rng))
        return req.SerializeToString()
    if kind < 0.9:  # bytes of a valid request, mutated
        raw = bytearray(valid_request(rng, step).SerializeToString())
        for _ in range(rng.randint(1, 8)):
            op, i = rng.random(), rng.randrange(len(raw))
            if op < 0.5:
                raw[i] ^= 1 << rng.randrange(8)
            elif op < 0.75:
                del raw[i: i + rng.randint(1, 16)]
            else:
                raw[i:i] = rng.randbytes(rng.randint(1, 16))
            if not raw:
                break
        return bytes(raw)
    return rng.randbytes(rng.randint(0, 256))  # noise


def checksum(party: ServerParty) -> float:
    return float(sum(p.double().sum() for p in party.model.state_dict().values()
                     if p.is_floating_point()))


@pytest.mark.slow
def test_fuzz_requests_always_get_a_status() -> None:
    cfg = load_preset(TINY)
    torch.manual_seed(0)
    party = ServerParty(cfg, num_classes=3)
    service = SplitLearningService(party, secure=False)
    server, port = serve(service, "127.0.0.1:0", tls_dir=None, workers=4)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    steps = channel.stream_stream("/pgsl.v1.SplitLearning/Steps",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
    rng = random.Random(0)
    statuses: Counter[str] = Counter()
    try:
        for i in range(N_REQUESTS):
            step = service.last_step.get("fuzz", 0) + 1
            before = checksum(party)
            try:
                replies = list(steps(iter([fuzz_case(rng, step)]), timeout=10,
                                     metadata=((SITE_HEADER, "fuzz"),)))
                assert len(replies) == 1, i
                statuses["OK"] += 1
            except grpc.RpcError as e:
                code = e.code()  # type: ignore[attr-defined]
                assert code in (grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.FAILED_PRECONDITION,
                                grpc.StatusCode.INTERNAL,  # protobuf bytes that do not parse
                                grpc.StatusCode.RESOURCE_EXHAUSTED), (i, code, e.details())  # type: ignore[attr-defined]
                details = e.details()  # type: ignore[attr-defined]
                assert details, i  # every refusal says why
                assert not details.startswith("internal error"), (i, details)  # a server fault
                assert checksum(party) == before, f"request {i} was refused but changed the model"
                statuses[code.name] += 1
        # still serving
        reply = pb.StepReply.FromString(next(iter(steps(
            iter([valid_request(rng, service.last_step.get("fuzz", 0) + 1).SerializeToString()]),
            metadata=((SITE_HEADER, "fuzz"),)))))
        assert reply.stats.count >= 1
    finally:
        channel.close()
        server.stop(0)
    assert sum(statuses.values()) == N_REQUESTS
    assert statuses["OK"] > 0 and statuses["INVALID_ARGUMENT"] > 1000
    print(dict(statuses))
