"""Where node agents talk to the monitor: /api/v1/agent/{config,push,poll}, each with the agent's own
token (not the web token). A body is read with a bound of its own (pushes of a queue an agent kept
while cut off are bigger than anything a person sends); garbage is a 400, too big a 413, a token that
is missing, wrong or revoked a 401, another node's checks a 403 — and then nothing is filed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from clusterwatch.agent import protocol
from clusterwatch.agent.hub import Refused
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.web.view import AgentEndpoints, MonitorView


def _hub(request: web.Request) -> AgentEndpoints:
    view: MonitorView = request.app[MONITOR]
    return view.agents


def _answer(model: BaseModel) -> web.Response:
    return web.Response(body=model.model_dump_json(), content_type="application/json")


def _refused(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return web.json_response({"error": message}, status=status, headers=headers)


async def _body(request: web.Request) -> bytes:
    declared = request.content_length
    if declared is not None and declared > protocol.MAX_BODY:
        raise Refused(413, f"body of {declared} bytes is over the {protocol.MAX_BODY}-byte limit")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > protocol.MAX_BODY:
            raise Refused(413, f"body is over the {protocol.MAX_BODY}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(model: type[Any], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))[:200]
        said = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
        raise Refused(400, f"not a valid {model.__name__}: {said}"[:400]) from None


async def _handle(request: web.Request, work: Any) -> web.Response:
    hub = _hub(request)
    try:
        name = await hub.authenticate(request.headers.get("Authorization", ""), request.remote)
        return _answer(await work(hub, name))
    except Refused as exc:
        if exc.status not in (401, 503):  # a 401 is logged where the token was looked at; a 503 is no mistake
            hub.refused(request.remote, f"{exc.status} {exc}")
        return _refused(exc.status, str(exc))


async def config(request: web.Request) -> web.Response:
    return await _handle(request, lambda hub, name: hub.config(name, request.remote))


async def push(request: web.Request) -> web.Response:
    async def work(hub: AgentEndpoints, name: str) -> BaseModel:
        return await hub.push(name, request.remote, _parse(protocol.Push, await _body(request)))

    return await _handle(request, work)


async def poll(request: web.Request) -> web.Response:
    async def work(hub: AgentEndpoints, name: str) -> BaseModel:
        return await hub.poll(name, request.remote, _parse(protocol.Poll, await _body(request)))

    return await _handle(request, work)


def routes(app: web.Application) -> None:
    app.router.add_get(protocol.CONFIG_PATH, config)
    app.router.add_post(protocol.PUSH_PATH, push)
    app.router.add_post(protocol.POLL_PATH, poll)
