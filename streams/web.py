"""The worker's own HTTP pages (Faust's web server): health and ingestion counters."""
from __future__ import annotations

from faust.web import Request, Response, View

from streams.app import app


@app.page("/health")
class Health(View):
    """Ready once the agents run; the counters let the demo and tests wait for the pipeline to drain."""

    async def get(self, request: Request) -> Response:
        from processors.agents import pipeline_stats

        return self.json({"status": "ok", **pipeline_stats()})
