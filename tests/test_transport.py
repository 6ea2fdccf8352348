"""Multi-site split learning over gRPC with mutual TLS: real processes on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import torch

from pgsl.client.party import ClientParty
from pgsl.config import load_preset
from pgsl.server.party import ServerParty
from pgsl.split.channel import InProcessChannel
from pgsl.split.messages import Activations, Gradient, Scores, StreamStats
from pgsl.transport import client as transport_client
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport import pgsl_pb2_grpc as pb_grpc
from pgsl.transport.client import GrpcChannel, TransportError
from pgsl.transport.codec import (
    DecodeError,
    decode_gradient,
    decode_request,
    decode_scores,
    encode_gradient,
    encode_request,
    encode_scores,
    encode_tensor,
)
from pgsl.transport.server import SplitLearningService, serve
from pgsl.transport.tls import make_certs

TINY = str(Path(__file__).parent / "tiny.toml")
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
SITES = ["hospital-a", "hospital-b", "hospital-c"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    make_certs(folder, [*SITES, "intruder"])
    return folder


@pytest.fixture(scope="module")
def server(tls: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `pgsl server` process with mutual TLS; yields its address."""
    out = tmp_path_factory.mktemp("server")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgsl", "-v", "server", "--listen", "127.0.0.1:0", "--tls", str(tls),
         "--config", TINY, "--out", str(out), "--sites", ",".join(SITES),
         "--max-message-mb", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+:\d+)", line)
    assert match, f"server did not start: {line!r}"
    yield match[1].replace("127.0.0.1", "localhost")  # the name in the server certificate
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert (out / "server.pt").is_file()  # state saved on shutdown


def client_cmd(address: str, tls: Path, site: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pgsl", "client", "--server", address, "--tls", str(tls),
            "--site", site, "--out", str(out), "--dataset", "mnist", "--preset", TINY,
            "--limit-train", "192", "--limit-test", "64", *extra]


@pytest.mark.slow
def test_three_sites_train_concurrently_and_survive_a_killed_site(server: str, tls: Path,
                                                                  tmp_path: Path) -> None:
    procs = {
        site: subprocess.Popen(
            client_cmd(server, tls, site, tmp_path / site, "--epochs", "3",
                       "--seed", str(i), *(["--wire-dtype", "float16"] if i == 1 else [])),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for i, site in enumerate(SITES)
    }
    # kill hospital-c once it has trained its surrogate and started talking to the server
    victim = tmp_path / "hospital-c" / "checkpoint.pt"
    deadline = time.time() + 120
    while not victim.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    procs["hospital-c"].send_signal(signal.SIGKILL)
    for site in ("hospital-a", "hospital-b"):
        stdout, stderr = procs[site].communicate(timeout=300)
        assert procs[site].returncode == 0, stderr
        metrics = json.loads((tmp_path / site / "metrics.json").read_text())
        losses = [h["train_loss"]["S_f"] for h in metrics["history"]]
        assert losses[-1] < losses[0], losses  # the shared server model learns
        assert "bytes sent per sample" in stdout
    procs["hospital-c"].wait()
    # the killed site reconnects and continues where the server says it stopped
    again = subprocess.run(client_cmd(server, tls, "hospital-c", tmp_path / "hospital-c",
                                      "--epochs", "2", "--seed", "2", "--resume"),
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "hospital-c" / "metrics.json").read_text())["epochs"] == 2


def request(step: int, activations: torch.Tensor, labels: torch.Tensor | None = None,
            train: bool = True) -> pb.StepRequest:
    req = pb.StepRequest(step=step, train=train, activations=encode_tensor(activations))
    if labels is not None:
        req.labels.CopyFrom(encode_tensor(labels))
    return req


def valid(step: int) -> pb.StepRequest:
    return request(step, torch.randn(2, 8, 14, 14), torch.tensor([0, 1]))


BAD = [
    ("wrong dtype", lambda s: pb.StepRequest(step=s, train=True, activations=pb.Tensor(
        dtype="complex64", shape=[2, 8, 14, 14], data=b"\0" * 1024)), "unsupported dtype"),
    ("bytes do not match shape", lambda s: pb.StepRequest(step=s, train=True, activations=pb.Tensor(
        dtype="float32", shape=[2, 8, 14, 14], data=b"\0" * 12)), "needs 12544 bytes"),
    ("wrong shape", lambda s: request(s, torch.randn(2, 5, 14, 14), torch.tensor([0, 1])), "shape"),
    ("NaN", lambda s: request(s, torch.full((2, 8, 14, 14), float("nan")), torch.tensor([0, 1])),
     "NaN or Inf"),
    ("Inf", lambda s: request(s, torch.full((2, 8, 14, 14), float("inf")), torch.tensor([0, 1])),
     "NaN or Inf"),
    ("labels out of range", lambda s: request(s, torch.randn(2, 8, 14, 14), torch.tensor([0, 99])),
     "labels must lie"),
    ("no labels", lambda s: request(s, torch.randn(2, 8, 14, 14)), "needs labels"),
    ("oversized", lambda s: request(s, torch.randn(64, 8, 32, 32), torch.zeros(64, dtype=torch.long)),
     None),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, make, message", BAD, ids=[b[0] for b in BAD])
def test_malformed_requests_get_a_status_and_the_server_keeps_serving(
        server: str, tls: Path, name: str, make, message: str | None) -> None:
    with GrpcChannel(server, site="hospital-b", tls_dir=tls) as channel:
        start = int(channel.join(8).last_step)
        with pytest.raises(TransportError) as info:
            channel._exchange(make(start + 1))
        if message is None:
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert message in info.value.details
        reply = channel._exchange(valid(start + 1))  # a fresh stream; the same step is accepted
        assert reply.step == start + 1 and reply.stats.count == 2


@pytest.mark.slow
def test_out_of_order_step_and_unknown_site_and_foreign_ca(server: str, tls: Path,
                                                           tmp_path: Path) -> None:
    with GrpcChannel(server, site="hospital-a", tls_dir=tls) as channel:
        start = int(channel.join(8).last_step)
        first = channel._exchange(valid(start + 1))
        channel._exchange(valid(start + 2))
        with pytest.raises(TransportError) as info:
            channel._exchange(valid(start + 1))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "out-of-order step" in info.value.details
        # the last step sent again (a lost reply) is answered from the cache, not run twice
        again = channel._exchange(valid(start + 2))
        second = channel._exchange(valid(start + 2))
        assert again == second and again != first
        with pytest.raises(TransportError, match="width 16 does not match"):
            channel.join(16)
    # a certificate from the right CA, but not a configured site
    with GrpcChannel(server, site="intruder", tls_dir=tls) as channel:
        with pytest.raises(TransportError) as info:
            channel.join(8)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "unknown site 'intruder'" in info.value.details
    # a certificate from another CA is refused in the TLS handshake
    other = tmp_path / "other"
    make_certs(other, ["hospital-a"])
    (other / "ca.pem").write_bytes((tls / "ca.pem").read_bytes())  # trusts the real server
    with GrpcChannel(server, site="hospital-a", tls_dir=other, timeout=5) as channel:
        with pytest.raises(grpc.RpcError) as rpc_error:
            channel._stub.Join(pb.Hello(width=8), timeout=5)  # no wait_for_ready: fail fast
        assert rpc_error.value.code() == grpc.StatusCode.UNAVAILABLE
    # no client certificate at all
    creds = grpc.ssl_channel_credentials(root_certificates=(tls / "ca.pem").read_bytes())
    with grpc.secure_channel(server, creds) as bare:
        with pytest.raises(grpc.RpcError) as rpc_error:
            pb_grpc.SplitLearningStub(bare).Join(pb.Hello(width=8), timeout=5)
        assert rpc_error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_and_in_process_train_the_same_weights() -> None:
    """Parity: one site over gRPC (no TLS) and the in-process channel, same seed and order."""
    cfg = load_preset(TINY)
    parties = []
    for _ in range(2):
        torch.manual_seed(0)
        server_party = ServerParty(cfg, num_classes=3)
        client_party = ClientParty(cfg, channels=1, num_classes=3)
        parties.append((client_party, server_party))
    service = SplitLearningService(parties[1][1], secure=False)
    grpc_server, port = serve(service, "127.0.0.1:0", tls_dir=None)
    try:
        with GrpcChannel(f"127.0.0.1:{port}", site="solo", tls_dir=None) as remote:
            channels = [InProcessChannel(parties[0][1]), remote]
            g = torch.Generator().manual_seed(3)
            for _ in range(4):
                x, y = torch.rand(6, 1, 12, 12, generator=g), torch.randint(0, 3, (6,), generator=g)
                for (client_party, _), channel in zip(parties, channels, strict=True):
                    torch.manual_seed(7)  # dropout draws
                    client_party.train_step(x, y, channel)
    finally:
        grpc_server.stop(0)
    for side in (lambda p: p[0].segment, lambda p: p[1].model):
        a, b = side(parties[0]).state_dict(), side(parties[1]).state_dict()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def test_float16_on_the_wire_halves_the_bytes() -> None:
    cfg = load_preset(TINY)
    torch.manual_seed(0)
    service = SplitLearningService(ServerParty(cfg, num_classes=3), secure=False)
    grpc_server, port = serve(service, "127.0.0.1:0", tls_dir=None)
    sent = {}
    try:
        for dtype in (None, torch.float16):
            with GrpcChannel(f"127.0.0.1:{port}", site=str(dtype), tls_dir=None,
                             wire_dtype=dtype) as channel:
                a = torch.randn(16, 8, 8, 8)
                reply = channel.train_step(Activations(1, a, torch.zeros(16, dtype=torch.long)))
                assert reply.grad.dtype == torch.float32 and reply.grad.shape == a.shape
                sent[dtype] = channel.bytes_sent
    finally:
        grpc_server.stop(0)
    assert 0.45 < sent[torch.float16] / sent[None] < 0.55


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tls: Path, out: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgsl", "server", "--listen", f"127.0.0.1:{port}", "--tls", str(tls),
         "--config", TINY, "--out", str(out), "--checkpoint-every", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert proc.stdout is not None and "listening on" in proc.stdout.readline()
    return proc


@pytest.mark.slow
def test_server_restart_sites_reconnect_and_finish(tls: Path, tmp_path: Path) -> None:
    port = free_port()
    server_out = tmp_path / "server"
    first = start_server(tls, server_out, port)
    client = subprocess.Popen(client_cmd(f"localhost:{port}", tls, "hospital-a", tmp_path / "a",
                                         "--epochs", "3", "--retries", "8"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while not (server_out / "server.pt").exists() and time.time() < deadline:
        time.sleep(0.1)  # the server has taken >= 5 training steps from the site
    first.send_signal(signal.SIGKILL)  # no chance to save: the last checkpoint is what survives
    first.wait()
    time.sleep(1.0)
    second = start_server(tls, server_out, port)
    try:
        _, stderr = client.communicate(timeout=300)
        assert client.returncode == 0, stderr
        assert json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs"] == 3
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)


# ---------------------------------------------------------------- codec, no network


def stats(n_streams: int, count: int = 4) -> StreamStats:
    return StreamStats(tuple(0.5 + i for i in range(n_streams)), tuple(range(n_streams + 1)), count)


def over_the_wire(reply: pb.StepReply) -> pb.StepReply:
    return pb.StepReply.FromString(reply.SerializeToString())


@pytest.mark.parametrize("n_streams", [1, 3])
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_gradient_round_trip(n_streams: int, dtype: torch.dtype | None) -> None:
    grad = torch.randn(4, 8, 6, 6)
    sent = Gradient(7, grad, stats(n_streams))
    got = decode_gradient(over_the_wire(encode_gradient(sent, dtype)), (4, 8, 6, 6))
    assert got.step == 7 and got.stats == sent.stats  # losses are exact in float32
    assert got.grad.dtype == torch.float32
    expected = grad if dtype is None else grad.to(dtype).float()
    assert torch.equal(got.grad, expected)


@pytest.mark.parametrize("n_streams", [1, 3])
def test_scores_round_trip(n_streams: int) -> None:
    streams = tuple(torch.rand(5, 3).softmax(1) for _ in range(n_streams))
    sent = Scores(9, streams, torch.rand(5, 3).softmax(1))
    got = decode_scores(over_the_wire(encode_scores(sent)))
    assert got.step == 9 and len(got.streams) == n_streams
    assert all(torch.equal(a, b) for a, b in zip(got.streams, sent.streams, strict=True))
    assert torch.equal(got.decision, sent.decision)


def test_request_round_trip_in_float16_asks_for_a_float16_reply() -> None:
    a, y = torch.randn(2, 8, 6, 6), torch.tensor([0, 2])
    req = encode_request(Activations(3, a, y), train=True, wire_dtype=torch.float16,
                         reply_dtype=torch.float16)
    assert req.activations.dtype == "float16" and req.reply_dtype == "float16"
    message, train, reply_dtype = decode_request(pb.StepRequest.FromString(req.SerializeToString()))
    assert train and reply_dtype == torch.float16 and message.step == 3
    assert message.activations.dtype == torch.float32
    assert torch.equal(message.activations, a.half().float()) and torch.equal(message.labels, y)


def reply_with(**fields: object) -> pb.StepReply:
    return pb.StepReply(step=5, **fields)  # type: ignore[arg-type]


GRAD = encode_tensor(torch.zeros(2, 8, 6, 6))
BAD_GRADIENTS = [
    ("no gradient", reply_with(stats=pb.StreamStats(losses=[1.0], correct=[1, 1], count=2)),
     "no gradient"),
    ("integer gradient", reply_with(grad=encode_tensor(torch.zeros(2, 8, 6, 6, dtype=torch.long)),
                                    stats=pb.StreamStats(losses=[1.0], correct=[1, 1], count=2)),
     "floating point"),
    ("gradient of another shape", reply_with(grad=encode_tensor(torch.zeros(2, 8, 3, 3)),
                                             stats=pb.StreamStats(losses=[1.0], correct=[1, 1],
                                                                  count=2)),
     "for activations of (2, 8, 6, 6)"),
    ("no losses", reply_with(grad=GRAD, stats=pb.StreamStats(correct=[1], count=2)), "no stream losses"),
    ("one count per stream only", reply_with(grad=GRAD, stats=pb.StreamStats(
        losses=[1.0, 1.0, 1.0], correct=[1, 1, 1], count=2)), "3 stream losses need 4 correct counts"),
    ("a count too many", reply_with(grad=GRAD, stats=pb.StreamStats(
        losses=[1.0], correct=[1, 1, 1], count=2)), "1 stream losses need 2 correct counts"),
    ("more right than the batch", reply_with(grad=GRAD, stats=pb.StreamStats(
        losses=[1.0], correct=[3, 1], count=2)), "exceed the batch of 2"),
    ("undecodable gradient", reply_with(grad=pb.Tensor(dtype="float32", shape=[2, 8, 6, 6], data=b"x"),
                                        stats=pb.StreamStats(losses=[1.0], correct=[1, 1], count=2)),
     "needs 2304 bytes"),
]


@pytest.mark.parametrize("name, reply, message", BAD_GRADIENTS, ids=[b[0] for b in BAD_GRADIENTS])
def test_bad_gradient_replies_raise_decode_error(name: str, reply: pb.StepReply, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_gradient(over_the_wire(reply), (2, 8, 6, 6))


def scores(*shapes: tuple[int, ...], dtype: torch.dtype = torch.float32) -> list[pb.Tensor]:
    return [encode_tensor(torch.zeros(s, dtype=dtype)) for s in shapes]


BAD_SCORES = [
    ("no streams", reply_with(decision=scores((2, 3))[0]), "no stream scores"),
    ("no decision", reply_with(streams=scores((2, 3))), "no decision scores"),
    ("streams differ", reply_with(streams=scores((2, 3), (2, 4), (2, 3)), decision=scores((2, 3))[0]),
     "differ in shape"),
    ("decision differs", reply_with(streams=scores((2, 3)), decision=scores((3, 3))[0]),
     "differ in shape"),
    ("not (B, K)", reply_with(streams=scores((2, 3, 1)), decision=scores((2, 3, 1))[0]),
     "stream 0 scores must be (B, K)"),
    ("integer scores", reply_with(streams=scores((2, 3)), decision=scores((2, 3), dtype=torch.long)[0]),
     "decision scores must be floating point"),
    ("undecodable stream", reply_with(streams=[pb.Tensor(dtype="float64", shape=[2, 3])],
                                      decision=scores((2, 3))[0]), "unsupported dtype"),
]


@pytest.mark.parametrize("name, reply, message", BAD_SCORES, ids=[b[0] for b in BAD_SCORES])
def test_bad_score_replies_raise_decode_error(name: str, reply: pb.StepReply, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_scores(over_the_wire(reply))


# ---------------------------------------------------------------- back-off, no network


def unavailable_then(n_failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
    """A call that fails ``n_failures`` times with ``code``, then returns "ok"; counts its calls."""
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= n_failures:
            raise TransportError(code, f"failure {len(calls)}")
        return "ok"

    return call, calls


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the client's back-off delays instead of sleeping."""
    slept: list[float] = []
    monkeypatch.setattr(transport_client, "time", SimpleNamespace(sleep=slept.append))
    return slept


def test_backoff_retries_unavailable_with_doubling_delays(sleeps: list[float]) -> None:
    with GrpcChannel("127.0.0.1:9", site="s", tls_dir=None, retries=6) as channel:  # never dialled
        call, calls = unavailable_then(6)
        rejoins: list[int] = []
        assert channel._retry(call, "test", lambda: rejoins.append(1)) == "ok"
    assert len(calls) == 7 and len(rejoins) == 6
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_backoff_gives_up_after_retries_and_on_other_codes(sleeps: list[float]) -> None:
    with GrpcChannel("127.0.0.1:9", site="s", tls_dir=None, retries=2) as channel:
        call, calls = unavailable_then(5)
        with pytest.raises(TransportError, match="failure 3") as info:
            channel._retry(call, "test")
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and len(calls) == 3
        call, calls = unavailable_then(5, grpc.StatusCode.INVALID_ARGUMENT)
        with pytest.raises(TransportError, match="failure 1"):
            channel._retry(call, "test")
        assert len(calls) == 1


def test_exchange_rejoins_and_aborts_when_the_server_is_past_the_step(
        sleeps: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    with GrpcChannel("127.0.0.1:9", site="s", tls_dir=None, retries=3) as channel:
        channel._width = 8
        call, calls = unavailable_then(1)
        monkeypatch.setattr(channel, "_exchange_once", lambda request: call())
        monkeypatch.setattr(channel, "join", lambda width: pb.Welcome(last_step=4))
        assert channel._exchange(pb.StepRequest(step=4)) == "ok"  # the server had not run it
        call, calls = unavailable_then(1)
        with pytest.raises(TransportError) as info:
            channel._exchange(pb.StepRequest(step=3))  # the server is at step 4
        assert info.value.code == grpc.StatusCode.ABORTED and len(calls) == 1


# ---------------------------------------------------------------- server faults, loopback gRPC


class FaultyParty(ServerParty):
    """A real server party whose training step raises an unexpected error on ``fail_at``, once."""

    fail_at: int | None = None

    def train_step(self, message: Activations) -> Gradient:
        if message.step == self.fail_at:
            self.fail_at = None
            raise RuntimeError("simulated library bug")
        return super().train_step(message)


def weights(party: ServerParty) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in party.model.state_dict().items()}


def test_server_bug_is_internal_logged_and_not_recorded(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    party = FaultyParty(load_preset(TINY), num_classes=3)
    party.fail_at = 2
    service = SplitLearningService(party, secure=False)
    grpc_server, port = serve(service, "127.0.0.1:0", tls_dir=None, workers=2)
    g = torch.Generator().manual_seed(0)

    def batch(step: int) -> Activations:
        return Activations(step, torch.randn(4, 8, 6, 6, generator=g), torch.tensor([0, 1, 2, 0]))

    try:
        with GrpcChannel(f"127.0.0.1:{port}", site="solo", tls_dir=None) as channel:
            channel.join(8)
            channel.train_step(batch(1))
            before = weights(party)
            with caplog.at_level(logging.ERROR, logger="pgsl.transport.hub"):
                with pytest.raises(TransportError) as info:
                    channel.train_step(batch(2))
            assert info.value.code == grpc.StatusCode.INTERNAL
            assert info.value.details == "internal error at step 2; see the server log"
            assert service.last_step["solo"] == 1 and service.train_steps == 1
            after = weights(party)
            assert all(torch.equal(before[k], after[k]) for k in before)
            # the server goes on: step 2 was not recorded, so the site may send it again
            assert channel.train_step(batch(2)).stats.count == 4
            assert channel.train_step(batch(3)).stats.count == 4
            assert service.last_step["solo"] == 3
    finally:
        grpc_server.stop(0)
    errors = [r for r in caplog.records if r.name == "pgsl.transport.hub" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "internal error at step 2 of site solo" in caplog.text
    assert "Traceback" in caplog.text and "RuntimeError: simulated library bug" in caplog.text


def test_predict_over_grpc_returns_each_stream_and_the_decision() -> None:
    torch.manual_seed(0)
    party = ServerParty(load_preset(TINY), num_classes=3)
    service = SplitLearningService(party, secure=False)
    grpc_server, port = serve(service, "127.0.0.1:0", tls_dir=None, workers=2)
    a = torch.randn(5, 8, 6, 6)
    try:
        with GrpcChannel(f"127.0.0.1:{port}", site="solo", tls_dir=None) as channel:
            remote = channel.predict(Activations(1, a))
    finally:
        grpc_server.stop(0)
    local = party.predict(Activations(1, a))
    assert len(remote.streams) == len(local.streams) >= 1
    for got, want in zip((*remote.streams, remote.decision), (*local.streams, local.decision),
                         strict=True):
        assert got.shape == (5, 3) and torch.allclose(got, want.float(), atol=1e-6)
