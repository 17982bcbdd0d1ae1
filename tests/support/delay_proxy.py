#!/usr/bin/python3
"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way.

  delay_proxy.py LISTEN_PORT TARGET_PORT[,TARGET_PORT...] DELAY_MS

With several target ports it is also a load balancer as a cloud's TCP one
is: each new connection goes to the next target, round robin.

A stand-in for a long link (a connector in another region than its broker):
each connection also takes one delay to open, as the SYN and SYN-ACK would,
before the first byte crosses. Data is never reordered or dropped; a half
close crosses after the same delay. Tests only: loopback, bounded by the
test's own lifetime.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            try:
                if not data:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    await asyncio.gather(read(), write())


async def main():
    listen_port, delay = int(sys.argv[1]), int(sys.argv[3]) / 1000.0
    targets = [int(p) for p in sys.argv[2].split(",")]
    turn = 0

    async def handle(client_reader, client_writer):
        nonlocal turn
        target_port = targets[turn % len(targets)]
        turn += 1
        await asyncio.sleep(delay)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.sleep(delay)
        await asyncio.gather(pipe(client_reader, up_writer, delay), pipe(up_reader, client_writer, delay),
                             return_exceptions=True)
        client_writer.close()
        up_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print(f"listening on 127.0.0.1:{listen_port}, {delay * 1000:.0f} ms each way to ports {targets}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
