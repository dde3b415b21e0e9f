import asyncio

from longrun import MemoryStore, current_run, longrun

processed = []


async def numbers(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@longrun(checkpoint=MemoryStore())
async def handler(event, context):
    run = current_run()
    async for i in run.iterate(numbers(event["n"])):
        await asyncio.sleep(1)
        processed.append(i)
    return len(processed)
