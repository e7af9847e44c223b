"""A target with a known capacity: it serves at most SLOTS requests at once, each held HOLD seconds.

Its throughput cannot exceed SLOTS / HOLD requests per second, and it saturates at SLOTS concurrent
clients: the knee a sweep must find. Run: python tests/sweep_target.py --port P --slots K --hold S

With --freeze S, a SIGUSR1 makes it answer nothing for S seconds (requests wait, none is lost): a stall in
the middle of a window, which an open model must show and a closed one hides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


async def _serve(port: int, slots: int, hold: float, freeze: float) -> None:
    gate = asyncio.Semaphore(slots)
    running = asyncio.Event()
    running.set()

    async def stall() -> None:
        running.clear()
        await asyncio.sleep(freeze)
        running.set()

    if freeze > 0:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(stall()))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                await running.wait()
                async with gate:
                    await asyncio.sleep(hold)
                writer.write(RESPONSE)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--hold", type=float, required=True)
    parser.add_argument("--freeze", type=float, default=0.0, help="seconds a SIGUSR1 stalls every answer")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.slots, args.hold, args.freeze))


if __name__ == "__main__":
    main()
