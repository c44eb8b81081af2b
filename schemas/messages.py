"""Scenario-log messages: stored as a code plus parameters, rendered in English or French when read.

Storing codes keeps the log language-neutral and lets a wording change apply to old rows too.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson

LANGUAGES = ("en", "fr")

CATALOGUE: dict[str, dict[str, str]] = {
    "automation_started": {"en": "Contact started the scenario", "fr": "Le contact a démarré le scénario"},
    "automation_restarted": {"en": "Contact restarted the scenario", "fr": "Le contact a redémarré le scénario"},
    "automation_step_reached": {"en": "Contact reached step {step}", "fr": "Le contact a atteint l'étape {step}"},
    "automation_waiting": {"en": "Contact is waiting ({wait_for}) until {wait_until}",
                           "fr": "Le contact est en attente ({wait_for}) jusqu'au {wait_until}"},
    # A wait without its reason or its end (the engine sends either, or neither): no dangling words.
    "automation_waiting_for": {"en": "Contact is waiting ({wait_for})", "fr": "Le contact est en attente ({wait_for})"},
    "automation_waiting_until": {"en": "Contact is waiting until {wait_until}",
                                 "fr": "Le contact est en attente jusqu'au {wait_until}"},
    "automation_waiting_open": {"en": "Contact is waiting", "fr": "Le contact est en attente"},
    "automation_action": {"en": "Action {action} ran at step {step}",
                          "fr": "L'action {action} a été exécutée à l'étape {step}"},
    "automation_email_sent": {"en": "Email {name} sent", "fr": "Email {name} envoyé"},
    "automation_exited": {"en": "Contact left the scenario ({reason})", "fr": "Le contact a quitté le scénario ({reason})"},
    "automation_removed": {"en": "Contact manually removed from the scenario",
                           "fr": "Le contact a été supprimé manuellement du scénario"},
    "track": {"en": "Tracked event {name}", "fr": "Événement suivi {name}"},
    "track_link": {"en": "Clicked the link {url}", "fr": "A cliqué sur le lien {url}"},
    "page": {"en": "Visited the page {url}", "fr": "A visité la page {url}"},
    "identify": {"en": "Was identified", "fr": "A été identifié"},
    "form": {"en": "Submitted the form {name}", "fr": "A soumis le formulaire {name}"},
    "list_addition": {"en": "Was added to the list {name}", "fr": "A été ajouté à la liste {name}"},
    "campaign_opened": {"en": "Opened the campaign {name}", "fr": "A ouvert la campagne {name}"},
    "campaign_clicked": {"en": "Clicked in the campaign {name}", "fr": "A cliqué dans la campagne {name}"},
    "campaign_unsubscribed": {"en": "Unsubscribed from the campaign {name}",
                              "fr": "S'est désinscrit de la campagne {name}"},
    "templates_opened": {"en": "Opened the email {name}", "fr": "A ouvert l'email {name}"},
    "templates_clicked": {"en": "Clicked in the email {name}", "fr": "A cliqué dans l'email {name}"},
    "templates_unsubscribed": {"en": "Unsubscribed from the email {name}", "fr": "S'est désinscrit de l'email {name}"},
}

EXIT_REASONS = {
    "completed": {"en": "completed", "fr": "terminé"},
    "goal_reached": {"en": "goal reached", "fr": "objectif atteint"},
    "condition_not_met": {"en": "condition not met", "fr": "condition non remplie"},
    "unsubscribed": {"en": "unsubscribed", "fr": "désinscrit"},
    "error": {"en": "error", "fr": "erreur"},
    "other": {"en": "other", "fr": "autre"},
}

ENROLLMENT_STATUSES = {  # of an enrollment (contacts in scenarios)
    "active": {"en": "active", "fr": "actif"},
    "waiting": {"en": "waiting", "fr": "en attente"},
    "exited": {"en": "exited", "fr": "sorti"},
    "removed": {"en": "removed", "fr": "supprimé"},
}

ATTRIBUTION_LABELS = {  # how a scenario-log row is tied to its scenario (processors/scenarios.py, ATTRIBUTIONS)
    "automation": {"en": "scenario event", "fr": "événement du scénario"},
    "message": {"en": "email of this scenario", "fr": "email de ce scénario"},
    "enrollment": {"en": "contact in the scenario", "fr": "contact dans le scénario"},
    "after_removal": {"en": "after the manual removal", "fr": "après la suppression manuelle"},
    "after_exit": {"en": "after the exit", "fr": "après la sortie"},
}

WORKFLOW_POINTS = {
    "started": {"en": "started", "fr": "démarré"},
    "restarted": {"en": "restarted", "fr": "redémarré"},
    "exited": {"en": "exited", "fr": "quitté"},
    "manually_removed": {"en": "manually removed", "fr": "supprimé manuellement"},
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


# Times inside messages (stored in UTC, ISO 8601): shown in the reader's time zone when one is given.
TIME_PARAMS = ("wait_until",)


ISO_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([+-][0-9]{2}:[0-9]{2}|Z)?$"
_ISO_TIME = re.compile(ISO_TIME)


def local_time(value: Any, tz: str) -> Any:
    """An ISO 8601 time (as stored: `ISO_TIME`) as seconds and offset in `tz` (2026-11-28T10:00:06+01:00);
    anything else unchanged."""
    if not isinstance(value, str) or not _ISO_TIME.match(value):
        return value
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # e.g. month 13
        return value
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def render(code: str, params: str | dict[str, Any] | None, language: str = "en", tz: str | None = None) -> str:
    """The message in `language`; unknown codes render as the code itself (never an error on read).
    `tz`: times inside it in that zone (pages and dumps pass theirs); without, as stored (UTC)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}")
    template = CATALOGUE.get(code, {}).get(language)
    if template is None:
        return code
    values = orjson.loads(params) if isinstance(params, str) and params else (params or {})
    values = dict(values)
    if "reason" in values:
        values["reason"] = EXIT_REASONS.get(values["reason"], {}).get(language, values["reason"])
    if tz is not None:
        for key in TIME_PARAMS:
            if key in values:
                values[key] = local_time(values[key], tz)
    return template.format_map(_Blank({k: "" if v is None else v for k, v in values.items()})).strip()


import functools  # noqa: E402 (used by the SQL twin below)
import string  # noqa: E402


def _space_class() -> str:
    """RE2 class of exactly the characters str.strip() removes (str.isspace()), as code-point ranges."""
    points = [c for c in range(0x110000) if chr(c).isspace()]
    ranges: list[list[int]] = []
    for c in points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in ranges) + "]"


@functools.lru_cache(maxsize=None)
def sql_render_expression(code_col: str, params_col: str, language: str, tz_param: str | None = None) -> str:
    """The ClickHouse twin of `render` (same text for every code and parameter), so that a page or a
    CSV dump renders messages in the engine and streams. `code_col`/`params_col` are SQL expressions;
    `tz_param` names a String query parameter holding the time zone (render's `tz`). Without it the
    expression is the one the analyst views of clickhouse/ddl/0005 hold."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}")

    def lit(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def value(key: str) -> str:  # as format_map on the parsed JSON: missing -> '?', null -> ''
        p, k = params_col, lit(key)
        v = (f"multiIf(NOT JSONHas({p}, {k}), '?', JSONType({p}, {k}) = 'String', JSONExtractString({p}, {k}), "
             f"JSONType({p}, {k}) = 'Null', '', JSONType({p}, {k}) = 'Bool', "
             f"if(JSONExtractBool({p}, {k}), 'True', 'False'), JSONExtractRaw({p}, {k}))")
        if key in TIME_PARAMS and tz_param:  # as local_time: parsed as ISO 8601, else shown as it is
            t = f"parseDateTime64BestEffortOrNull({v}, 3, 'UTC')"
            local, off = f"toTimeZone({t}, {{{tz_param}:String}})", f"timeZoneOffset(toTimeZone({t}, {{{tz_param}:String}}))"
            shown = (f"concat(formatDateTime({local}, '%Y-%m-%dT%H:%i:%S'), if({off} < 0, '-', '+'), "
                     f"leftPad(toString(intDiv(abs({off}), 3600)), 2, '0'), ':', "
                     f"leftPad(toString(intDiv(abs({off}) % 3600, 60)), 2, '0'))")
            v = (f"if(JSONType({p}, {k}) = 'String' AND match({v}, {lit(ISO_TIME)}) AND {t} IS NOT NULL, "
                 f"{shown}, {v})")
        if key == "reason":
            reasons = sorted(EXIT_REASONS)
            v = (f"transform({v}, [{', '.join(map(lit, reasons))}], "
                 f"[{', '.join(lit(EXIT_REASONS[r][language]) for r in reasons)}])")
        return v

    space = _space_class()
    branches = []
    for code, texts in CATALOGUE.items():
        template = texts[language]
        parts = []
        for literal, field, _spec, _conv in string.Formatter().parse(template):
            if literal:
                parts.append(lit(literal))
            if field is not None:
                parts.append(value(field))
        expr = parts[0] if len(parts) == 1 else f"concat({', '.join(parts)})"
        if template != template.strip() or template[:1] == "{" or template[-1:] == "}":  # what .strip() may cut
            expr = f"replaceRegexpAll({expr}, {lit(f'^{space}+|{space}+$')}, '')"
        branches += [f"{code_col} = {lit(code)}", expr]
    return f"multiIf({', '.join(branches)}, toString({code_col}))"
