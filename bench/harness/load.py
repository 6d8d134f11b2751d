"""The load: wrk for throughput and latency, an asyncio client for idle connections."""

import asyncio
import json
import subprocess
from pathlib import Path

REPORT = Path(__file__).with_name("report.lua")


def wrk(url: str, connections: int, seconds: float, headers=()) -> dict:
    """One wrk run (one thread, on the harness's CPU); its exact counts as a dict."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    cmd += ["-s", str(REPORT)]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            result["errors"] = sum(result["errors"].values())
            return result
    raise RuntimeError(f"wrk printed no result: {done.stdout}{done.stderr}")


async def _hold(port: int, count: int, ready: asyncio.Event, release: asyncio.Event) -> dict:
    request = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
    opened, answered, failed = [], 0, 0
    semaphore = asyncio.Semaphore(256)  # connects in flight: no SYN flood on the listener

    async def one():
        nonlocal answered, failed
        async with semaphore:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 10
                )
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = _content_length(head)
                await asyncio.wait_for(reader.readexactly(length), 10)
                if head.startswith(b"HTTP/1.1 200"):
                    answered += 1
                else:
                    failed += 1
                opened.append(writer)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    await asyncio.gather(*(one() for _ in range(count)))
    ready.set()
    await release.wait()
    still_open = sum(1 for w in opened if not w.transport.is_closing())
    for w in opened:
        w.close()
    return {"answered": answered, "errors": failed, "open_at_end": still_open}


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def hold_idle(port: int, count: int, while_held) -> dict:
    """Opens `count` keep-alive connections, each answered once, then calls
    `while_held()` (which measures) before closing them all."""

    async def main():
        ready, release = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_hold(port, count, ready, release))
        await ready.wait()
        # Let the balancer settle after the last answer: sluice parks a connection idle
        # for 200 ms and its allocator hands freed pages back about a second later.
        await asyncio.sleep(3.0)
        measured = while_held()
        release.set()
        result = await task
        result.update(measured)
        return result

    return asyncio.run(main())
