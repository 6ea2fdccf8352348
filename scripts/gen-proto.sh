#!/usr/bin/env bash
# Regenerate the protobuf/gRPC stubs after editing src/pgsl/transport/pgsl.proto.
# Needs grpcio-tools (pip install grpcio-tools); the stubs are committed, users never run this.
set -euo pipefail
cd "$(dirname "$0")/../src"
../.venv/bin/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \
    pgsl/transport/pgsl.proto
