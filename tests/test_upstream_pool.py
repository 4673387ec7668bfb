"""The gateway's upstream pool never hands a request to a connection the replica already closed.

Real sockets: small asyncio HTTP servers on free ports that close idle connections the way a
replica's keep-alive timeout does, or that drop a reused connection the moment a request arrives on
it (the race the pool cannot see coming).
"""

from __future__ import annotations

import asyncio

from fermion.platform.gateway.upstream import UpstreamPool, _keep_alive_timeout

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request head (the tests send no bodies); False when the client closed."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    return bool(head)


async def _call(pool: UpstreamPool, url: str) -> int:
    response = await pool.request(url, "GET", "/x", [], b"")
    async for _ in response.body:
        pass
    return response.status


async def _server(handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_a_connection_the_replica_closed_while_idle_is_not_reused():
    """The replica's keep-alive ends (it closes the socket); the next request must still succeed."""

    async def scenario() -> tuple[list[int], int]:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                if await _read_request(reader):
                    writer.write(ANSWER)
                    await writer.drain()
                await asyncio.sleep(0.05)  # a very short keep-alive: close the idle connection
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server, url = await _server(handler)
        pool = UpstreamPool(idle_timeout=3600)  # only the closed-socket check can save us here
        try:
            statuses = await asyncio.gather(*(_call(pool, url) for _ in range(8)))
            await asyncio.sleep(0.3)  # every pooled connection is now closed by the server
            statuses += [await _call(pool, url) for _ in range(8)]
        finally:
            await pool.aclose()
            server.close()
        return list(statuses), connections

    statuses, connections = asyncio.run(scenario())
    assert statuses == [200] * 16
    assert connections >= 9  # the quiet spell's connections were replaced, not reused


def test_a_request_that_dies_on_every_reused_connection_is_sent_on_a_fresh_one():
    """The race no check can see: each reused connection drops the request unanswered (as a replica
    does when its keep-alive ends just as the request arrives). Several such connections are pooled;
    the request must not be tried on a second dead one but on a fresh connection."""

    async def scenario() -> list[int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if await _read_request(reader):  # first request on this connection: answered
                    writer.write(ANSWER)
                    await writer.drain()
                    await _read_request(reader)  # a second one: dropped without a byte
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server, url = await _server(handler)
        pool = UpstreamPool(idle_timeout=3600)
        try:
            await asyncio.gather(*(_call(pool, url) for _ in range(4)))  # four pooled connections
            return [await _call(pool, url) for _ in range(4)]
        finally:
            await pool.aclose()
            server.close()

    assert asyncio.run(scenario()) == [200] * 4


def test_idle_connections_past_the_pools_limit_are_closed_not_reused():
    async def scenario() -> tuple[int, int]:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while await _read_request(reader):
                    writer.write(ANSWER)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server, url = await _server(handler)
        pool = UpstreamPool(idle_timeout=0.1)
        try:
            await _call(pool, url)
            await _call(pool, url)  # reused: still fresh
            before = connections
            await asyncio.sleep(0.25)
            await _call(pool, url)  # idle too long: a new connection
            return before, connections
        finally:
            await pool.aclose()
            server.close()

    before, after = asyncio.run(scenario())
    assert (before, after) == (1, 2)


def test_keep_alive_timeouts_are_read_from_the_header():
    assert _keep_alive_timeout(b"timeout=5, max=100") == 5.0
    assert _keep_alive_timeout(b"max=100") is None
    assert _keep_alive_timeout(b"timeout=soon") is None
