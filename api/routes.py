"""The HTTP API (JSON and CSV): the three views, one line's detail, removals, the OpenAPI document.

Plain aiohttp handlers: the worker mounts them on Faust's web server (with embedded chdb only the
worker may open the data); `autologs api` serves them alone when a ClickHouse server is configured.
Every request carries an API key bound to one account, and reads or changes only that account.
"""
from __future__ import annotations

from functools import partial

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from autologs.admin import HEADER as ADMIN_HEADER, admin_key_matches
from autologs.clickhouse import ClickHouse
from autologs.config import Settings
from autologs.keys import KeyRing, is_revoked
from autologs.removal import RemovalRefused, remove_contacts
from query import views

log = logging.getLogger("autologs.api")

PREFIX = "/api/v1"


@dataclass
class ApiContext:
    settings: Settings
    ch: ClickHouse  # a reader with its own threads: reads never wait behind the sink's inserts
    keys: KeyRing


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


def make_routes(ctx: ApiContext) -> list[web.RouteDef]:
    async def account_of(request: web.Request) -> str:
        if admin_key_matches(ctx.settings, request.headers.get(ADMIN_HEADER)):
            # The local operator (CLI on the worker's machine) acts for the account it names.
            account = request.query.get("account")
            if not account:
                raise web.HTTPBadRequest(body=orjson.dumps({"error": "name the account: ?account=..."}),
                                         content_type="application/json")
            return account
        presented = _presented_key(request)
        account = await ctx.ch.run(ctx.keys.account_for, presented)
        if account is None:
            if presented and await ctx.ch.run(is_revoked, ctx.ch, presented):
                message = "this API key was revoked: ask for a new one (`autologs keys create --account A`)"
            else:
                message = ("missing or unknown API key: send 'Authorization: Bearer al_...' (create one with "
                           "`autologs keys create`)")
            raise web.HTTPUnauthorized(body=orjson.dumps({"error": message}), content_type="application/json")
        asked = request.query.get("account")
        if asked is not None and asked != account:
            raise web.HTTPForbidden(body=orjson.dumps({"error": "this API key belongs to another account"}),
                                    content_type="application/json")
        return account

    def params_of(request: web.Request) -> dict[str, str]:
        return {k: v for k, v in request.query.items() if k != "account"}

    def view_of(request: web.Request) -> str:
        view = request.match_info["view"]
        if view not in views.VIEWS:
            raise web.HTTPNotFound(body=orjson.dumps({"error": f"unknown view {view!r}; views: "
                                                               f"{', '.join(views.VIEWS)}"}),
                                   content_type="application/json")
        return view

    async def list_rows(request: web.Request) -> web.Response:
        view, account = view_of(request), await account_of(request)
        try:
            return _json(await ctx.ch.run(views.page, ctx.ch, view, account, params_of(request)))
        except views.QueryError as exc:
            return _error(400, str(exc))

    async def one_row(request: web.Request) -> web.Response:
        view, account = view_of(request), await account_of(request)
        params = params_of(request)
        unknown = sorted(set(params) - {"tz", "lang"})
        if unknown:
            return _error(400, f"unknown parameter {unknown[0]!r} for one line; known: account, tz, lang")
        try:
            row = await ctx.ch.run(partial(views.detail, tz=params.get("tz") or "UTC", lang=params.get("lang") or "en"),
                                   ctx.ch, view, account, request.match_info["row_id"])
        except views.QueryError as exc:
            return _error(400, str(exc))
        return _json(row) if row is not None else _error(404, "no such line in this account")

    async def csv_dump(request: web.Request) -> web.StreamResponse:
        from query.csv_export import dump_filename

        view, account = view_of(request), await account_of(request)
        params = params_of(request)
        chunks = views_csv_chunks(view, account, params)
        try:
            first = await ctx.ch.run(next, chunks, b"")  # parameters are checked before anything is sent
        except views.QueryError as exc:
            return _error(400, str(exc))
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{dump_filename(view, account, params)}"'})
        await response.prepare(request)
        await response.write(first)
        while chunk := await ctx.ch.run(next, chunks, b""):
            await response.write(chunk)
        await response.write_eof()
        return response

    def views_csv_chunks(view: str, account: str, params: dict):
        from query.csv_export import csv_chunks

        return csv_chunks(ctx.ch, view, account, params)

    async def remove(request: web.Request) -> web.Response:
        account = await account_of(request)
        shape = ' (send {"scenario": "...", "contacts": ["email or id", ...]}). Nothing was removed.'
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _error(400, f"the body is not valid JSON: {exc}" + shape)
        if not isinstance(body, dict):
            return _error(400, "the body is not a JSON object" + shape)
        if not isinstance(body.get("scenario"), str):
            return _error(400, "'scenario' is missing or not a string: the scenario's id" + shape)
        if not body["scenario"].strip():
            return _error(400, "'scenario' is empty: give the scenario's id" + shape)
        if not isinstance(body.get("contacts"), list):
            return _error(400, "'contacts' is missing or not a list: a list of emails or contact ids, even for "
                               "one contact" + shape)
        wrong = [c for c in body["contacts"] if not isinstance(c, (str, int)) or isinstance(c, bool)]
        if wrong:
            return _error(400, f"'contacts' holds {orjson.dumps(wrong[0]).decode()[:80]}: each contact is an email "
                               "or a contact id (a string or a number)" + shape)
        if "by" in body and not isinstance(body["by"], str):
            return _error(400, "'by' is not a string: who asks for the removal, e.g. an email" + shape)
        unknown = sorted(set(body) - {"scenario", "contacts", "at", "by"})
        if unknown:  # a misspelt "at" or "by" must not be dropped silently
            return _error(400, f"unknown field {unknown[0]!r}; the fields are scenario, contacts, at (ISO 8601, "
                               "default now) and by (who asks). Nothing was removed.")
        at = None
        if body.get("at"):
            try:
                at = datetime.fromisoformat(str(body["at"]))
            except ValueError:
                return _error(400, f"'at' is {str(body['at'])[:40]!r}, not an ISO 8601 time: give e.g. "
                                   "2026-11-26T10:00:00Z, or leave it out for now. Nothing was removed.")

        async def lookup(query: str, parameters: dict) -> list[list]:
            return await ctx.ch.run(ctx.ch.rows, query, parameters)

        try:
            result = await remove_contacts(ctx.settings, account, body["scenario"],
                                           [str(c) for c in body["contacts"]], at, str(body.get("by", "api")),
                                           lookup)
        except RemovalRefused as exc:
            return _error(400, str(exc))
        except (KafkaError, OSError) as exc:  # the broker is down or unreachable: nothing is lost, send it again
            log.warning("removal not sent: %s", exc)
            return _error(503, f"the removal could not be sent: Kafka at {ctx.settings.kafka_bootstrap} does not "
                               f"answer ({type(exc).__name__}). Nothing is removed until it is sent: start the "
                               "broker (`autologs broker start`) and send the same request again (a contact "
                               "already removed is not removed twice).")
        return _json({"request_id": result.request_id, "removed": result.removed,
                      "not_in_scenario": [{"contact": c, "reason": r} for c, r in result.not_in_scenario]})

    async def openapi(request: web.Request) -> web.Response:
        from api.openapi import document

        return _json(document())

    async def post_only(request: web.Request) -> web.Response:
        response = _error(405, 'POST {"scenario": "...", "contacts": ["email or id", ...]} to remove contacts')
        response.headers["Allow"] = "POST"
        return response

    return [
        web.get(f"{PREFIX}/openapi.json", openapi),
        web.post(f"{PREFIX}/contacts/remove", remove),
        web.get(f"{PREFIX}/contacts/remove", post_only),  # not the detail of a row with id "remove"
        web.get(PREFIX + "/{view}.csv", csv_dump),
        web.get(PREFIX + "/{view}/{row_id}", one_row),
        web.get(PREFIX + "/{view}", list_rows),
    ]


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application()
    app.add_routes(make_routes(ctx))
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Standalone API (ClickHouse server only: an embedded engine belongs to the worker)."""
    ch = ClickHouse(settings, threads=8)
    web.run_app(make_app(ApiContext(settings, ch, KeyRing(ch))), host=host, port=port,
                loop=asyncio.new_event_loop())
