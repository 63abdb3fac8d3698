"""A web service that trains while it answers: aiohttp + asynca3c on one event loop.

    pip install -e ".[service]"
    python examples/service.py --port 8080 --seconds 0      # 0: train until POST /stop

    curl -X POST localhost:8080/act -d '{"obs": [0.01, 0.0, -0.02, 0.0]}'
    curl -X POST localhost:8080/act -d '{"obs": [...], "session": "client-7"}'   # a recurrent policy
    curl localhost:8080/metrics
    curl -X POST localhost:8080/stop

Training starts with the app (its cleanup context) and stops gracefully when
the server shuts down; ``/act`` answers from the live policy, batched with the
agents' own requests, during training and after it ends.
"""

from __future__ import annotations

import argparse
import math

from aiohttp import web

from asynca3c import Config, Trainer

TRAINER = web.AppKey("trainer", Trainer)


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


async def act(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        obs, session = body["obs"], body.get("session")
        if not isinstance(session, (str, int, type(None))):
            raise TypeError(session)
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='expected JSON {"obs": [...], "deterministic": false, "session": null, '
                                      '"episode_over": false} (session: a string or an integer)') from None
    trainer = request.app[TRAINER]
    try:
        action = await trainer.act(obs, deterministic=bool(body.get("deterministic", False)), session=session)
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    if session is not None and body.get("episode_over"):  # a recurrent policy forgets the finished episode
        trainer.end_session(session)
    return web.json_response({"action": action})


async def metrics(request: web.Request) -> web.Response:
    return web.json_response(_json_safe(request.app[TRAINER].snapshot()))


async def stop(request: web.Request) -> web.Response:
    result = await request.app[TRAINER].stop()
    return web.json_response(_json_safe(result.to_dict()))


def make_app(config: Config) -> web.Application:
    app = web.Application()

    async def training(app: web.Application):
        trainer = Trainer(config)
        await trainer.start()  # its tasks run on the server's loop
        app[TRAINER] = trainer
        try:
            yield
        finally:
            try:
                await trainer.stop()
            finally:
                await trainer.aclose()

    app.cleanup_ctx.append(training)
    app.add_routes([web.post("/act", act), web.get("/metrics", metrics), web.post("/stop", stop)])
    return app


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="asynca3c training behind an HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seconds", type=float, default=0.0, help="training budget (0: until POST /stop)")
    args = p.parse_args(argv)
    config = Config(env=args.env, seconds=args.seconds, final_eval_episodes=20)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = None
    web.run_app(make_app(config), host=args.host, port=args.port, loop=loop, print=print)


if __name__ == "__main__":
    main()
