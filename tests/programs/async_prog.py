"""asyncio: tasks, gather, an async generator, cancellation and a timeout."""
import asyncio


async def ticker(n):
    for i in range(n):
        yield i * 10
        await asyncio.sleep(0)


async def worker(name, delay):
    await asyncio.sleep(delay)
    return f"{name} done"


async def sleeper():
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        cancelled = True
        raise


async def main():
    ticks = [t async for t in ticker(3)]
    results = await asyncio.gather(worker("a", 0.01), worker("b", 0))
    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        results.append("cancelled")
    try:
        await asyncio.wait_for(asyncio.sleep(10), timeout=0.01)
    except TimeoutError:
        results.append("timeout")
    return ticks, results


print(asyncio.run(main()))
