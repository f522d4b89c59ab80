"""The socket ``failover-agent serve`` listens on: answers leave without waiting for an ACK."""

from __future__ import annotations

import asyncio
import socket

from agent.cli.serve import _listening_socket


def test_the_served_connections_send_without_nagle() -> None:
    """With Nagle on, the tail of an answer over one segment long (a 1,000-VM operation's view)
    waits for the client's delayed ACK: 40 ms on Linux. asyncio turns it off on each connection
    only if the listening socket says TCP; this checks it did on a connection as served."""

    async def main() -> int:
        sock = _listening_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        try:
            _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            got = await asyncio.wait_for(seen, 10)
            writer.close()
            return got
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) != 0
