"""Load for the probes benchmark, from a process of its own: N keep-alive connections,
each sending GET PATH at the same moment, round after round; prints each request's
latency (send → whole answer read) as JSON.

    python -m benchmarks.probes_client HOST PORT PATH CONNECTIONS ROUNDS

Plain asyncio streams, not an HTTP client library: the figure is the server's, and a
heavier client on the same two cores would mostly measure itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def one(reader, writer, request: bytes) -> tuple[float, int]:
    began = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return time.perf_counter() - began, status


async def main(host: str, port: int, path: str, connections: int, rounds: int) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    streams = [await asyncio.open_connection(host, port) for _ in range(connections)]
    latencies, statuses = [], {}
    for _ in range(rounds):
        results = await asyncio.gather(*(one(reader, writer, request) for reader, writer in streams))
        for seconds, status in results:
            latencies.append(seconds)
            statuses[status] = statuses.get(status, 0) + 1
        await asyncio.sleep(0.05)
    for _, writer in streams:
        writer.close()
    print(json.dumps({"latencies": latencies, "statuses": statuses}))


if __name__ == "__main__":
    host, port, path, connections, rounds = sys.argv[1:6]
    asyncio.run(main(host, int(port), path, int(connections), int(rounds)))
