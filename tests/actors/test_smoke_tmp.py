import asyncio, time
from ray_realtime import RealtimeAgent
from ray_realtime.runner.runner import RealtimeRunner

async def test_smoke(ray_cluster):
    import ray
    print(ray_cluster.zones)
    print(await ray_cluster.router.status.remote())
    agent = RealtimeAgent(name="A", instructions="hi")
    runner = RealtimeRunner(agent, config={"execution": "actor"})
    t0 = time.perf_counter()
    async with await runner.run() as s:
        print("enter", time.perf_counter() - t0)
        await s.send_message("hello")
        async def go():
            async for ev in s:
                print(ev.type)
                if ev.type == "agent_end":
                    return
        await asyncio.wait_for(go(), 20)
