"""The worker's own HTTP pages (Faust's web server): health and, for admins, read-only SQL.

With embedded chdb only the worker may open the data, so reads from other processes come here.
"""
from __future__ import annotations

import os

import orjson
from faust.web import Request, Response, View

from api.routes import ApiContext, make_routes
from autologs.admin import HEADER, admin_key_matches
from autologs.clickhouse import ClickHouse, refuse_unless_read
from autologs.keys import KeyRing, create_key, list_keys, revoke_key
from streams.app import app, settings


@app.page("/health")
class Health(View):
    """Ready once the agents run; the counters let the demo and tests wait for the pipeline to drain."""

    async def get(self, request: Request) -> Response:
        from processors.agents import pipeline_stats

        # "status": "ok", or "failing: ..." while inserts are retried; pid and data_dir say which worker answers
        return self.json({**pipeline_stats(), "pid": os.getpid(), "data_dir": str(settings.data_dir.resolve())})


@app.page("/admin/sql")
class AdminSql(View):
    """POST {"query": "...", "parameters": {...}} with the admin key; runs read-only, answers {"columns": [...], "rows": [...]}."""

    async def post(self, request: Request) -> Response:
        if not admin_key_matches(settings, request.headers.get(HEADER)):
            return self.json({"error": "admin key missing or wrong"}, status=401)
        body = await _json_object(request) or {}
        query, params = body.get("query"), body.get("parameters")
        if not isinstance(query, str) or not query.strip() or not isinstance(params, (dict, type(None))):
            return self.json({"error": "give {\"query\": \"SELECT ...\", \"parameters\": {...}}"}, status=400)
        refused = refuse_unless_read(query)
        if refused:
            return self.json({"error": refused}, status=400)
        ch = reader()  # not the sinks' thread: a slow query must not hold the inserts back
        try:
            result = await ch.run(lambda: ch.query(query, params, settings={"readonly": 2}))
        except Exception as exc:
            return self.json({"error": str(exc)}, status=400)
        payload = orjson.dumps({"columns": list(result.column_names), "rows": result.result_rows}, default=str)
        return self.bytes(payload, content_type="application/json")


@app.page("/admin/keys")
class AdminKeys(View):
    """POST {"account": "...", "label": "..."} with the admin key: a new API key, shown once.
    {"action": "list", "account"}: the account's keys; {"action": "revoke", "account", "key_id"}: revoke one."""

    async def post(self, request: Request) -> Response:
        if not admin_key_matches(settings, request.headers.get(HEADER)):
            return self.json({"error": "admin key missing or wrong"}, status=401)
        body = await _json_object(request)
        if body is None:
            return self.json({"error": "send a JSON object"}, status=400)
        ch = reader()
        account, action = str(body.get("account", "")), body.get("action", "create")
        if action == "list":
            return self.json({"keys": await ch.run(list_keys, ch, account)})
        if action == "revoke":
            outcome = await ch.run(revoke_key, ch, account, str(body.get("key_id", "")))
            if outcome is None:
                return self.json({"error": f"no key {body.get('key_id')!r} in account {account!r}; "
                                           "`autologs keys list --account A` shows them"}, status=404)
            if _key_ring is not None:
                _key_ring.forget()
            return self.json({"revoked": True, "outcome": outcome})
        try:
            key = await ch.run(create_key, ch, account, str(body.get("label", "")))
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.json({"key": key, "account": body.get("account")})


_replay = None


@app.page("/admin/replay")
class AdminReplay(View):
    """POST {"from", "to", "topics", "in_place", "resume"} starts a replay in this worker; GET follows it."""

    async def get(self, request: Request) -> Response:
        if not admin_key_matches(settings, request.headers.get(HEADER)):
            return self.json({"error": "admin key missing or wrong"}, status=401)
        if _replay is None:
            from replay.run import interrupted_after_swap

            # a replay stopped after its swap, which this worker is about to finish: something to follow
            return self.json({"running": True, "phase": "starting"} if interrupted_after_swap(settings)
                             else {"running": False})
        return self.json(_replay.status())

    async def post(self, request: Request) -> Response:
        from datetime import datetime

        from processors.agents import pipeline
        from replay.plan import ReplayRefused
        from replay.service import WorkerReplay
        from streams.tables import enrollments

        global _replay
        if not admin_key_matches(settings, request.headers.get(HEADER)):
            return self.json({"error": "admin key missing or wrong"}, status=401)
        body = await _json_object(request)
        if body is None:
            return self.json({"error": "send a JSON object"}, status=400)
        prefix = body.get("topic_prefix")
        if prefix is not None and prefix != settings.topic_prefix:
            return self.json({"error": f"the worker on this data dir reads the topics {settings.topic_prefix}.*, not "
                                       f"{prefix}.*: run the replay with AUTOLOGS_TOPIC_PREFIX={settings.topic_prefix}, "
                                       "or replay into another AUTOLOGS_DATA_DIR"}, status=409)
        try:
            t_from = datetime.fromisoformat(body["from"]) if body.get("from") else None
            t_to = datetime.fromisoformat(body["to"]) if body.get("to") else None
        except ValueError as exc:
            return self.json({"error": f"bad time: {exc}"}, status=400)
        _replay = _replay or WorkerReplay()
        try:
            _replay.start(settings, replayer(), enrollments, t_from, t_to, body.get("topics"),
                          bool(body.get("in_place")), bool(body.get("resume")), live=pipeline())
        except ReplayRefused as exc:
            return self.json({"error": str(exc)}, status=409)
        return self.json({"started": True}, status=202)


_key_ring: KeyRing | None = None
_helpers: dict[str, ClickHouse] = {}


def reader() -> ClickHouse:
    """Reads and admin work of the web pages, on threads of their own: never behind the sinks' inserts."""
    if "reader" not in _helpers:
        _helpers["reader"] = ClickHouse(settings, threads=4)
    return _helpers["reader"]


def replayer() -> ClickHouse:
    """The replay's own threads, one helper for every replay of this worker."""
    if "replay" not in _helpers:
        _helpers["replay"] = ClickHouse(settings, threads=2)
    return _helpers["replay"]


async def _json_object(request: Request) -> dict | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@app.task
async def finish_a_replay_interrupted_after_its_swap() -> None:
    """The tables were swapped, so the catch-up and the last window are owed to them: go on by ourselves."""
    from processors.agents import pipeline
    from replay.run import interrupted_after_swap
    from replay.service import WorkerReplay
    from streams.tables import enrollments

    global _replay
    if not interrupted_after_swap(settings):
        return
    app.log.warning("a replay was interrupted after its swap (or during it): finishing it (its catch-up and last window); "
                    "follow it with `autologs replay --status`")
    _replay = _replay or WorkerReplay()
    _replay.start(settings, replayer(), enrollments, None, None, None, in_place=False, resume=True, live=pipeline())


def mount_api() -> None:
    """The account API on the worker's web server, with the pages' reader."""
    global _key_ring
    _key_ring = KeyRing(reader())
    app.web.web_app.router.add_routes(make_routes(ApiContext(settings, reader(), _key_ring)))


mount_api()
