"""Bad requests against the real API process (real Redis and Kafka behind it): schemathesis
generates requests from the OpenAPI spec, valid and invalid, and every answer must be a
documented status with a body that matches the spec; oversized bodies are refused before they
are read."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]

EXAMPLES_PER_OPERATION = 200


def test_no_server_error_and_every_response_matches_the_spec(api: str):
    """schemathesis' checks on every operation: no 5xx other than a documented 503 (POST /events
    while Kafka is away), only documented status codes, bodies and headers that match the spec.
    Requests are generated valid and invalid (negative mode) from the OpenAPI schema."""
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    calls: dict[str, int] = {}
    failures: list[str] = []

    def make_check(operation, mode: GenerationMode, key: str):
        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            calls[key] = calls.get(key, 0) + 1
            case.call_and_validate(timeout=10)

        return check

    for result, mode in itertools.product(list(schema.get_all_operations()), GenerationMode):
        operation = result.ok()
        key = f"{operation.method.upper()} {operation.path} ({mode.value})"
        check = make_check(operation, mode, key)
        try:
            check()
        except Unsatisfiable:
            # an operation without parameters or body (GET /health) has no invalid input to generate
            assert mode is GenerationMode.NEGATIVE, key
            calls.setdefault(key, 0)
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises an exception group; collect all
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            failures.append(f"{key}: {exc}")
    print(f"\nFIGURES case=6 bad-requests injected='schemathesis, valid and invalid requests from the "
          f"OpenAPI spec, up to {EXAMPLES_PER_OPERATION} per operation and mode' requests={sum(calls.values())} "
          f"operations={len(calls)} failures={len(failures)} (5xx or answers outside the spec)\n"
          f"cases per operation {calls}")
    assert len(calls) >= 4, calls
    assert not failures, "\n\n".join(failures)


def _raw_post(base: str, headers: str, body: bytes, wait_s: float = 5.0) -> tuple[bytes, float]:
    host, port = base.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=wait_s) as conn:
        conn.sendall(headers.encode() + b"\r\n" + body)
        reply = conn.recv(4096)
        elapsed_ms = (time.perf_counter() - started) * 1000  # the first bytes of the answer
        head, _, rest = reply.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:  # the body may come in a second packet
            more = conn.recv(4096)
            if not more:
                break
            rest += more
    return head + b"\r\n\r\n" + rest, elapsed_ms


def test_an_announced_oversized_body_is_refused_before_it_is_sent(api: str):
    """Content-Length of 50 MB, only 1 KB actually sent: the 413 must come back without waiting
    for (or reading) the rest."""
    headers = ("POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {50 * 1024 * 1024}\r\n")
    reply, elapsed_ms = _raw_post(api, headers, b"{" + b" " * 1024)
    print(f"\nFIGURES case=6 oversized-body-announced injected='Content-Length 50 MB, 1 KB sent' "
          f"status={reply[9:12].decode(errors='replace')} answer_ms={elapsed_ms:.1f} (bound 2000)")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"larger than" in reply
    assert elapsed_ms < 2000


def test_a_chunked_oversized_body_is_refused_once_it_passes_the_limit(api: str):
    chunk = b"x" * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"  # 128 KB
    headers = "POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    reply, elapsed_ms = _raw_post(api, headers, body)
    print(f"\nFIGURES case=6 oversized-body-chunked injected='128 KB chunked body' "
          f"status={reply[9:12].decode(errors='replace')} answer_ms={elapsed_ms:.1f}")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
