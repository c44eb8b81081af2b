"""The worker's own HTTP pages (Faust's web server): health and, for admins, read-only SQL.

With embedded chdb only the worker may open the data, so reads from other processes come here.
"""
from __future__ import annotations

import orjson
from faust.web import Request, Response, View

from autologs.admin import HEADER, admin_key_matches
from streams.app import app, settings


@app.page("/health")
class Health(View):
    """Ready once the agents run; the counters let the demo and tests wait for the pipeline to drain."""

    async def get(self, request: Request) -> Response:
        from processors.agents import pipeline_stats

        return self.json({"status": "ok", **pipeline_stats()})


@app.page("/admin/sql")
class AdminSql(View):
    """POST {"query": "...", "parameters": {...}} with the admin key; runs read-only, answers {"columns": [...], "rows": [...]}."""

    async def post(self, request: Request) -> Response:
        from processors.agents import pipeline

        if not admin_key_matches(settings, request.headers.get(HEADER)):
            return self.json({"error": "admin key missing or wrong"}, status=401)
        body = await request.json()
        query = body.get("query") if isinstance(body, dict) else None
        params = body.get("parameters") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip() or not isinstance(params, (dict, type(None))):
            return self.json({"error": "give {\"query\": \"SELECT ...\", \"parameters\": {...}}"}, status=400)
        ch = pipeline().ch
        try:
            result = await ch.run(lambda: ch.query(query, params, settings={"readonly": 2}))
        except Exception as exc:
            return self.json({"error": f"query failed: {exc}"}, status=400)
        payload = orjson.dumps({"columns": list(result.column_names), "rows": result.result_rows}, default=str)
        return self.bytes(payload, content_type="application/json")
