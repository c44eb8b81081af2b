"""The OpenAPI document of the HTTP API, built from the query module's own lists of filters."""
from __future__ import annotations

from query import views

COMMON = [
    ("from", "Start of the range (ISO 8601 date or time, in `tz`). Default: 7 days ago."),
    ("to", "End of the range (ISO 8601, in `tz`). Default: now."),
    ("tz", "IANA time zone of the bounds and of the dates returned. Default: UTC."),
    ("lang", "en or fr: language of messages and of 'internal request'. Default: en."),
    ("limit", f"Rows per page, 1 to {views.MAX_PAGE}. Default: {views.DEFAULT_PAGE}."),
    ("cursor", "next_cursor of the previous page."),
]


ACCOUNT = ("account", "Optional: the key's own account (another one answers 403). The local admin key must name it.")
SCHEMAS = {"limit": {"type": "integer", "minimum": 1, "maximum": views.MAX_PAGE, "default": views.DEFAULT_PAGE},
           "lang": {"type": "string", "enum": ["en", "fr"], "default": "en"},
           "tz": {"type": "string", "default": "UTC"}}


def _param(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": SCHEMAS.get(name, {"type": "string"})}


def _errors() -> dict:
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {"400": {"description": "Bad parameter (the message says which and why)", "content": body},
            "401": {"description": "Missing or unknown API key", "content": body},
            "403": {"description": "The key belongs to another account", "content": body}}


FILTER_DESCRIPTIONS = {
    "email": "The contact's email (any case; an international domain in either form).",
    "contact_id": "The contact's id (a whole number).",
    "event_type": "One event type, or several separated by commas (templates_opened,templates_clicked).",
    "event_name": "The name of a tracked event (type track), e.g. order_created.",
    "name": "Part of the form / list / email / automation name; case and accents ignored (ete finds été).",
    "ip": "An IP address (::ffff:192.0.2.7 finds 192.0.2.7), or 'internal' for internal requests.",
    "message_id": "The email's message id, with or without its angle brackets.",
    "template_id": "A transactional template id.",
    "campaign_id": "A campaign id.",
    "scenario": "The scenario's id (scenario_id in the rows).",
    "step": "One step id, or several separated by commas (s1,s2).",
    "type": "One event type, or several separated by commas.",
    "workflow_point": "started, restarted, exited, manually_removed; several separated by commas.",
    "attribution": "automation, message, enrollment, after_removal, after_exit; several separated by commas.",
    "status": "'all', or a list of active, waiting, exited, removed separated by commas (default active,waiting).",
}


def document() -> dict:
    paths: dict = {}
    for view in views.VIEWS:
        filters = [_param(name, FILTER_DESCRIPTIONS.get(name, f"Filter on {name}.")) for name in views.FILTERS[view]]
        params = [_param(n, d) for n, d in (*COMMON, ACCOUNT)] + filters
        paths[f"/api/v1/{view}"] = {"get": {
            "summary": f"A page of {view}, newest first (keyset pagination)", "parameters": params,
            "responses": {"200": {"description": "rows, columns and next_cursor",
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}},
                          **_errors()}}}
        paths[f"/api/v1/{view}.csv"] = {"get": {
            "summary": f"CSV dump of {view} for the date range (streamed; same filters; limit and cursor are "
                       "refused: a dump is every row of the range)",
            "parameters": [p for p in params if p["name"] not in ("limit", "cursor")] + [_param(
                "excel", "1: for a spreadsheet opened by a double click (a UTF-8 byte-order mark, ';' between cells, "
                         "dates as 2026-11-20 11:00:00.000 in tz)")],
            "responses": {"200": {"description": "CSV, UTF-8, RFC 4180: the page's columns, then what a dump adds "
                                                 "(events: event_id; contacts: waiting_until, last_change); saved "
                                                 "as {view}-{from}_{to}.csv", "content": {"text/csv": {}}},
                          **_errors()}}}
        paths[f"/api/v1/{view}/{{row_id}}"] = {"get": {
            "summary": "Every technical field of one line (the expanded log)",
            "parameters": [{"name": "row_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           *(_param(n, d) for n, d in COMMON if n in ("tz", "lang")), _param(*ACCOUNT)],
            "responses": {"200": {"description": "the line: every field of the table, typed; dates in tz; the help "
                                                 "page's names beside them (created_at, email_id, sib_type; date, "
                                                 "user_email, workflow_points); ip as the line shows it",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "404": {"description": "no such line in this account"}, **_errors()}}}
    paths["/api/v1/contacts/remove"] = {"post": {
        "summary": "Remove up to 50 contacts from a scenario",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["scenario", "contacts"],
            "properties": {"scenario": {"type": "string"},
                           "contacts": {"type": "array", "minItems": 1, "maxItems": 50,
                                        "items": {"oneOf": [{"type": "string", "description": "email"},
                                                            {"type": "integer", "description": "contact id"}]}},
                           "at": {"type": "string", "format": "date-time",
                                  "description": "time of the removal; default now; not in the future"},
                           "by": {"type": "string", "description": "who removes them (kept in the log)"}}}}}},
        "parameters": [_param(*ACCOUNT)],
        "responses": {"200": {"description": "removed, and contacts not in the scenario with the reason",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Removal"}}}},
                      "405": {"description": "GET: this endpoint takes a POST"}, **_errors()}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "autologs API", "version": "1",
                 "description": "Event logs, scenario logs and contacts in scenarios of one account."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
                "Page": {"type": "object", "properties": {
                    "view": {"type": "string"}, "columns": {"type": "array", "items": {"type": "string"}},
                    "rows": {"type": "array", "items": {"type": "object"}},
                    "next_cursor": {"type": "string", "nullable": True},
                    "from": {"type": "string"}, "to": {"type": "string"}, "tz": {"type": "string"}}},
                "Removal": {"type": "object", "properties": {
                    "request_id": {"type": "string"},
                    "removed": {"type": "array", "items": {"type": "string"}},
                    "not_in_scenario": {"type": "array", "items": {"type": "object", "properties": {
                        "contact": {"type": "string"}, "reason": {"type": "string"}}}}}},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    }
