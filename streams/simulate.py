"""A realistic, deterministic synthetic workload for the events topic (`autologs simulate`).

Why simulated rather than sampled: the pipeline's scenario log and "contacts in scenarios" only make
sense when automation events tell coherent stories (started -> steps -> exit, opens after sends), and
benchmarks need the same stream again and again. Everything comes from one `random.Random(seed)` and
one time-ordered heap, so a spec always yields the same events, lazily, in occurred_at order.

How it runs: every contact has a pending "next web session"; campaigns are blasted once a day per
account; journeys advance one step at a time. Each of these is an entry of a heap keyed by time; an
entry, when due, emits its events and schedules what follows (clicks after opens, the next step after
a wait, a journey after a trigger). Memory is bounded by contacts and open journeys, not by events.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import cycle, islice
from typing import Any, Callable, Iterator

import click
import orjson

from schemas.events import partition_key

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def _default_start(days: int) -> datetime:
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate; two equal specs give byte-identical streams.

    `start` defaults to today's UTC midnight minus `days`, so the period ends at midnight: every event
    is in the past (the schema rejects events dated more than 24 h ahead).
    """

    seed: int = 42
    accounts: int = 3
    contacts: int = 1000  # in total, spread unevenly over the accounts
    scenarios: int = 3  # per account
    days: int = 1
    start: datetime | None = None
    internal_ratio: float = 0.3  # share of events without ip (automation and list events always are)
    max_events: int | None = None  # stop after this many events (exact counts for benchmarks)

    def __post_init__(self) -> None:
        if self.accounts < 1 or self.contacts < 1 or self.scenarios < 0 or self.days < 1:
            raise ValueError("accounts, contacts and days must be >= 1, scenarios >= 0")
        if not 0.0 <= self.internal_ratio <= 1.0:
            raise ValueError("internal_ratio must be between 0 and 1")
        start = self.start or _default_start(self.days)
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        object.__setattr__(self, "start", start.astimezone(timezone.utc))

    @property
    def id_prefix(self) -> str:
        """Event ids are `<id_prefix>-N`: the same for the same options (a re-run is deduplicated), other for
        other options or another day, whose events would otherwise share ids (`max_events` only cuts the stream
        short, so it is left out)."""
        options = (self.accounts, self.contacts, self.scenarios, self.days, self.start.isoformat(), self.internal_ratio)
        return f"sim-{self.seed}-{hashlib.blake2s(repr(options).encode(), digest_size=3).hexdigest()}"

    @property
    def end(self) -> datetime:
        assert self.start is not None
        return self.start + timedelta(days=self.days)


# --- the simulated world ---------------------------------------------------------------------------
_BRANDS = (
    ("Maison Lumière", "maison-lumiere.example", ("lamp", "candle", "vase", "cushion", "mirror", "rug")),
    ("Vélo Rapido", "velo-rapido.example", ("helmet", "saddle", "bell", "jersey", "pump", "light")),
    ("Green Pantry", "green-pantry.example", ("tea", "granola", "honey", "coffee", "olive-oil", "spice-box")),
    ("Atelier Nord", "atelier-nord.example", ("jacket", "scarf", "beanie", "boots", "gloves", "sweater")),
    ("PetitPote", "petitpote.example", ("stroller", "blanket", "rattle", "bib", "bodysuit", "playmat")),
)
_ADJECTIVES = ("classic", "organic", "linen", "urban", "vintage", "premium", "mini", "nordic")
_FIRST = ("camille", "louis", "lea", "hugo", "chloe", "lucas", "manon", "jules", "ines", "adam", "sarah",
          "noah", "emma", "gabriel", "alice", "arthur", "julia", "paul", "zoe", "victor", "nina", "oscar")
_LAST = ("martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau",
         "simon", "laurent", "lefebvre", "michel", "garcia", "david", "bertrand", "roux", "vincent", "fournier")
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "corp.example", "example.fr")
_AGENTS = ("Camille", "Yanis", "Sofia", "Marc")
_SEARCHES = ("gift", "sale", "new", "black", "size m", "delivery", "bundle", "eco")
_CAMPAIGN_THEMES = ("Newsletter de la semaine", "New arrivals", "Soldes d'hiver – jusqu'à -50 %",
                    "Weekend flash sale", "Our favourites this month", "Back in stock")
_TX_TEMPLATES = ("Order confirmation", "Shipping confirmation", "Password reset", "Invoice available",
                 "Appointment reminder")
# Mail clients that fetch images through a proxy: many opens come from a few shared addresses.
_MAIL_PROXY_IPS = ("198.51.100.7", "198.51.100.8", "198.51.100.19", "2001:db8:f00d::17")
# Visits by UTC hour: a European audience, quiet at night, peaks late morning and in the evening.
_DIURNAL = (0.10, 0.06, 0.04, 0.03, 0.04, 0.08, 0.20, 0.45, 0.70, 0.85, 0.95, 1.00,
            0.95, 0.85, 0.85, 0.90, 0.90, 0.85, 0.90, 1.00, 0.95, 0.75, 0.45, 0.22)
_DIURNAL_MEAN = sum(_DIURNAL) / 24

# Steps: (name, kind, argument). kind: email (template name) | wait ((ms, words)) | action (action name)
# | condition ("opened" = opened the previous email, or a probability to be met).
_SCENARIO_KINDS: tuple[dict[str, Any], ...] = (
    dict(name="Welcome series", triggers={"newsletter_form": "e1", "newsletter_list": "e2"}, enter=1.0,
         goal=None, restart=False, steps=(
             ("Send welcome email", "email", "Welcome #1 – thanks for subscribing"),
             ("Wait 4 hours", "wait", (4 * HOUR, "4 hours")),
             ("Opened the welcome email?", "condition", "opened"),
             ("Send best sellers and coupon", "email", "Welcome #2 – our best sellers, 10% off"),
             ("Tag as new subscriber", "action", "update_contact"))),
    dict(name="Abandoned cart", triggers={"cart_updated": ""}, enter=0.14, goal="order_created", restart=True,
         steps=(
             ("Wait 1 hour", "wait", (HOUR, "1 hour")),
             ("Send cart reminder", "email", "Your cart is waiting"),
             ("Wait 4 hours", "wait", (4 * HOUR, "4 hours")),
             ("Send coupon reminder", "email", "Still thinking? 10% off your cart"),
             ("Tag as cart abandoner", "action", "update_contact"))),
    dict(name="Post-purchase", triggers={"order_created": ""}, enter=0.4, goal=None, restart=True, steps=(
        ("Send thank-you email", "email", "Thank you for your order"),
        ("Wait for delivery", "wait", (12 * HOUR, "12 hours")),
        ("Delivered?", "condition", 0.85),
        ("Send review request", "email", "How did we do? Leave a review"),
        ("Add to customers list", "action", "add_to_list"))),
    dict(name="Browse abandonment", triggers={"product_view": ""}, enter=0.02, goal="order_created",
         restart=False, steps=(
             ("Wait 2 hours", "wait", (2 * HOUR, "2 hours")),
             ("No order since?", "condition", 0.85),
             ("Send product reminder", "email", "Still interested?"))),
    dict(name="Lead nurturing", triggers={"quote_form": "e1", "chat_ended": "e2"}, enter=0.35, goal=None,
         restart=False, steps=(
             ("Send quote follow-up", "email", "Your quote request"),
             ("Wait 1 day", "wait", (DAY, "1 day")),
             ("Send customer stories", "email", "Customer stories"),
             ("Wait 2 days", "wait", (2 * DAY, "2 days")),
             ("Notify the CRM", "action", "webhook"))),
    dict(name="Re-engagement", triggers={"campaign_clicked": ""}, enter=0.05, goal="order_created",
         restart=False, steps=(
             ("Wait 3 days", "wait", (3 * DAY, "3 days")),
             ("Send win-back offer", "email", "We miss you – 15% off"),
             ("Update engagement score", "action", "update_contact"))),
)
_ALL_TEMPLATE_NAMES = _TX_TEMPLATES + tuple(
    dict.fromkeys(arg for k in _SCENARIO_KINDS for (_n, kind, arg) in k["steps"] if kind == "email")
)
_RESTART_AFTER = 30 * MINUTE  # a trigger re-enters a restartable scenario only after this long in it

# Rates (per contact and day, or probabilities), tuned so the default spec gives the documented shares.
_SESSIONS_PER_DAY = 0.83
_P_LOGIN = 0.25
_PAGES_EXTRA_MEAN = 1.6
_P_LINK_PER_PAGE = 0.21
_P_PRODUCT_PAGE = 0.45
_P_CART_PER_PRODUCT = 0.28
_P_ORDER_GIVEN_CART = 0.35
_P_SEARCH = 0.40
_P_WISHLIST = 0.12
_P_CHAT = 0.08
_P_FORM = 0.20
_P_TX_EMAIL = 0.36  # per session: a password reset, invoice, appointment reminder...
_P_LIST_IMPORT = 0.15  # per session of an unsubscribed contact: added to the newsletter by an import
_P_SUBSCRIBED = 0.75
_CAMPAIGN_OPEN, _CAMPAIGN_CLICK, _CAMPAIGN_UNSUB = 0.55, 0.38, 0.045
_TEMPLATE_OPEN, _TEMPLATE_CLICK, _TEMPLATE_UNSUB = 0.62, 0.32, 0.035
_REOPEN = 0.35  # probability of one more open after an open (geometric)
_RECLICK = 0.25


class _Rng(random.Random):
    """random.Random with a randrange/choice three times cheaper (floats; bias irrelevant here)."""

    def randrange(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + int(self.random() * (b - a))

    def choice(self, seq):  # type: ignore[override]
        return seq[int(self.random() * len(seq))]


class _Account:
    __slots__ = ("num", "account_id", "brand", "host", "products", "contacts", "scenarios", "triggers",
                 "templates", "orders")

    def __init__(self, num: int, rng: random.Random) -> None:
        brand, host, nouns = _BRANDS[(num - 1) % len(_BRANDS)]
        self.num = num
        self.account_id = f"acct-{num}"
        self.brand = brand
        self.host = f"https://www.{host}" if num <= len(_BRANDS) else f"https://www.shop{num}.{host}"
        self.products = [(f"{a}-{n}", f"{a.capitalize()} {n.replace('-', ' ')}", round(rng.uniform(9, 240), 2))
                         for a in _ADJECTIVES for n in nouns]
        rng.shuffle(self.products)
        self.contacts: list[_Contact] = []
        self.scenarios: list[_Scenario] = []
        self.triggers: dict[str, list[_Scenario]] = {}
        self.templates = {name: num * 1000 + i + 1 for i, name in enumerate(_ALL_TEMPLATE_NAMES)}
        self.orders = 0


class _Scenario:
    __slots__ = ("automation_id", "name", "entry_points", "start_ids", "steps", "step_ids", "enter", "goal",
                 "restart")

    def __init__(self, account: _Account, k: int) -> None:
        kind = _SCENARIO_KINDS[(k - 1) % len(_SCENARIO_KINDS)]
        round_ = (k - 1) // len(_SCENARIO_KINDS)
        self.automation_id = f"sc-{account.account_id}-{k}"
        self.name = kind["name"] + (f" {round_ + 1}" if round_ else "")
        self.entry_points = len(kind["triggers"])
        # start_id names the entry point only when there are several (as the product shows it).
        self.start_ids = {t: (e if self.entry_points > 1 else "") for t, e in kind["triggers"].items()}
        self.steps = kind["steps"]
        self.step_ids = tuple(f"s{i + 1}" for i in range(len(self.steps)))
        self.enter = kind["enter"]
        self.goal = kind["goal"]
        self.restart = kind["restart"]
        for trigger in kind["triggers"]:
            account.triggers.setdefault(trigger, []).append(self)


class _Journey:
    """A contact's current passage through a scenario; `token` invalidates steps scheduled before a
    restart or an early exit (the heap cannot remove them)."""

    __slots__ = ("scenario", "token", "start_id", "started", "last_open", "step")

    def __init__(self, scenario: _Scenario, token: int, start_id: str, started: int) -> None:
        self.scenario = scenario
        self.token = token
        self.start_id = start_id
        self.started = started
        self.last_open: int | None = None
        self.step = -1  # not started yet


class _Contact:
    __slots__ = ("account", "contact_id", "email", "first", "last", "ips", "activity", "journeys",
                 "subscribed", "customer", "carts", "next_tick")

    def __init__(self, account: _Account, contact_id: int, rng: random.Random) -> None:
        self.account = account
        self.contact_id = contact_id
        self.first = rng.choice(_FIRST)
        self.last = rng.choice(_LAST)
        self.email = f"{self.first}.{self.last}{contact_id}@{rng.choice(_DOMAINS)}"
        if rng.random() < 0.5:  # carrier-grade NAT space, or the documentation ranges
            home = f"100.{rng.randrange(64, 128)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"
        else:
            home = f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randrange(1, 255)}"
        mobile = "2001:db8:" + ":".join(f"{rng.randrange(1, 0x10000):x}" for _ in range(6))  # canonical form
        self.ips = (home, mobile) if rng.random() < 0.6 else (home,)
        self.activity = rng.lognormvariate(-0.32, 0.8)  # mean ~1: a few heavy visitors, many quiet ones
        self.journeys: dict[str, _Journey] = {}
        self.subscribed = rng.random() < _P_SUBSCRIBED
        self.customer = rng.random() < 0.3
        self.carts = 0


class _Simulation:
    def __init__(self, spec: SimulationSpec) -> None:
        assert spec.start is not None
        self.spec = spec
        self._id_prefix = spec.id_prefix
        self.rng = rng = _Rng(spec.seed)
        self.start_ms = int(spec.start.timestamp() * 1000)
        self.end_ms = self.start_ms + spec.days * DAY
        self.heap: list[tuple[int, int, Callable[[int, Any], None], Any]] = []
        self.seq = 0
        self.out: list[dict] = []
        self.n = 0
        self.internal = 0  # events emitted without ip
        self.inherent = 0  # ... of which the ones that never have one (automation, list additions)
        self.ipable = 0
        self.tokens = 0
        self.messages = 0
        self._sec = -1
        self._sec_text = ""
        self.accounts = [_Account(i + 1, rng) for i in range(spec.accounts)]
        weights = [1.0 / (i + 1) ** 0.7 for i in range(spec.accounts)]
        for cid in range(1, spec.contacts + 1):
            acc = self.accounts[cid - 1] if cid <= spec.accounts else rng.choices(self.accounts, weights)[0]
            acc.contacts.append(_Contact(acc, cid, rng))
        for acc in self.accounts:
            acc.scenarios = [_Scenario(acc, k) for k in range(1, spec.scenarios + 1)]
            for c in acc.contacts:
                self._schedule_session(c, self.start_ms)
            for day in range(spec.days):
                at = self.start_ms + day * DAY + rng.randrange(7 * HOUR, 10 * HOUR)
                campaign_id = acc.num * 100_000 + day + 1
                theme = _CAMPAIGN_THEMES[(day + acc.num) % len(_CAMPAIGN_THEMES)]
                date = datetime.fromtimestamp(at / 1000, timezone.utc)
                self._push(at, self._blast, (acc, campaign_id, f"{theme} – {date:%d %b %Y}"))

    # --- plumbing ------------------------------------------------------------------------------
    def _push(self, ts: int, fn: Callable[[int, Any], None], payload: Any) -> None:
        if ts < self.end_ms:
            self.seq += 1
            heapq.heappush(self.heap, (ts, self.seq, fn, payload))

    def _iso(self, ts: int) -> str:
        sec, ms = divmod(ts, 1000)
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._sec_text}.{ms:03d}Z"

    def _emit(self, ts: int, c: _Contact, typ: str, fields: dict, ipable: bool) -> None:
        n = self.n
        self.n = n + 1
        ev = {"event_id": f"{self._id_prefix}-{n}", "type": typ, "account_id": c.account.account_id,
              "occurred_at": self._iso(ts), "contact_id": c.contact_id, "email": c.email}
        if ipable:
            # Drop the ip of just enough ip-capable events (server-side calls) to meet internal_ratio.
            # The deficit term corrects the drift of a rate that changes over the day.
            self.ipable += 1
            target = self.spec.internal_ratio * self.n
            want = (target - self.inherent) / self.ipable + (target - self.internal) / 50
            if self.rng.random() < want:
                self.internal += 1
            else:
                ips = c.ips
                ev["ip"] = ips[0] if len(ips) == 1 or self.rng.random() < 0.6 else ips[1]
        else:
            self.inherent += 1
            self.internal += 1
        ev.update(fields)
        self.out.append(ev)

    def _event(self, ts: int, p: tuple) -> None:
        c, typ, fields, ipable, trigger = p
        self._emit(ts, c, typ, fields, ipable)
        if trigger:
            self._trigger(ts, c, trigger)

    def run(self) -> Iterator[dict]:
        heap, out, pop = self.heap, self.out, heapq.heappop
        left = self.spec.max_events if self.spec.max_events is not None else -1
        while heap:
            ts, _, fn, payload = pop(heap)
            fn(ts, payload)
            if out:
                for ev in out:
                    if left == 0:
                        return
                    left -= 1
                    yield ev
                out.clear()

    # --- web sessions ----------------------------------------------------------------------------
    def _schedule_session(self, c: _Contact, after: int) -> None:
        rng = self.rng
        rate = _SESSIONS_PER_DAY * c.activity / _DIURNAL_MEAN / DAY  # per ms, at the busiest hour
        t = after
        while True:  # thinning: a Poisson process whose rate follows the hour of the day
            t += int(rng.expovariate(rate)) + 1
            if t >= self.end_ms:
                return
            if rng.random() < _DIURNAL[(t // HOUR) % 24]:
                self._push(t, self._session, c)
                return

    def _page(self, acc: _Account, rng: random.Random) -> tuple[str, str, tuple | None]:
        r = rng.random()
        if r < _P_PRODUCT_PAGE:
            p = rng.choice(acc.products)
            return f"{acc.host}/products/{p[0]}", f"{p[1]} | {acc.brand}", p
        if r < 0.62:
            return f"{acc.host}/", f"{acc.brand} – home", None
        if r < 0.80:
            cat = rng.choice(acc.products)[0].split("-", 1)[1]
            return f"{acc.host}/category/{cat}", f"{cat.replace('-', ' ').capitalize()} | {acc.brand}", None
        if r < 0.92:
            p = rng.choice(acc.products)
            return f"{acc.host}/blog/how-to-choose-your-{p[0]}", f"How to choose your {p[1].lower()}", None
        return f"{acc.host}/account", f"My account | {acc.brand}", None

    def _session(self, ts: int, c: _Contact, landing: tuple | None = None) -> None:
        """One visit: pages, and what people do on them, a few seconds to minutes apart."""
        rng, acc, push, ev = self.rng, c.account, self._push, self._event
        if landing is None:
            self._schedule_session(c, ts)
        t = ts
        if rng.random() < _P_LOGIN:
            push(t, ev, (c, "identify", {"properties": {"FIRSTNAME": c.first.capitalize(),
                                                       "LASTNAME": c.last.capitalize()}}, True, None))
            t += rng.randrange(500, 4000)
        pages = 1
        while rng.random() < _PAGES_EXTRA_MEAN / (1 + _PAGES_EXTRA_MEAN):
            pages += 1
        cart: list[tuple] = []
        form_at = rng.randrange(0, pages) if rng.random() < _P_FORM else -1
        for i in range(pages):
            if i == 0 and landing is not None:
                url, title, product = landing
            else:
                url, title, product = self._page(acc, rng)
            push(t, ev, (c, "page", {"url": url, "page_title": title}, True,
                         "product_view" if product is not None else None))
            t += rng.randrange(3_000, 30_000)
            if product is not None and rng.random() < _P_CART_PER_PRODUCT:
                cart.append(product)
                c.carts += 1
                total = round(sum(p[2] for p in cart), 2)
                push(t, ev, (c, "track", {"event_name": "cart_updated", "properties": {
                    "cart_id": f"cart-{c.contact_id}-{c.carts}", "items": len(cart), "total": total,
                    "currency": "EUR", "product_id": product[0]}}, True, "cart_updated"))
                t += rng.randrange(2_000, 20_000)
            elif product is not None and rng.random() < _P_WISHLIST:
                push(t, ev, (c, "track", {"event_name": "wishlist_added",
                                          "properties": {"product_id": product[0]}}, True, None))
                t += rng.randrange(1_000, 10_000)
            if rng.random() < _P_LINK_PER_PAGE:
                link = rng.choice((f"{acc.host}/downloads/catalogue-2026.pdf", f"{acc.host}/size-guide.pdf",
                                   "https://www.instagram.com/" + acc.host.split("//www.")[1].split(".")[0],
                                   f"{acc.host}/stores#map"))
                push(t, ev, (c, "track_link", {"url": link}, True, None))
                t += rng.randrange(1_000, 15_000)
            if i == form_at:
                t = self._form(t, c)
            t += rng.randrange(5_000, 90_000)
        if rng.random() < _P_SEARCH:
            push(t, ev, (c, "track", {"event_name": "search_performed",
                                      "properties": {"query": rng.choice(_SEARCHES)}}, True, None))
            t += rng.randrange(2_000, 20_000)
        if cart and rng.random() < _P_ORDER_GIVEN_CART:
            push(t, ev, (c, "page", {"url": f"{acc.host}/checkout", "page_title": f"Checkout | {acc.brand}"},
                         True, None))
            t += rng.randrange(30_000, 240_000)
            acc.orders += 1
            push(t, ev, (c, "track", {"event_name": "order_created", "properties": {
                "order_id": f"ord-{acc.num}-{acc.orders}", "items": len(cart),
                "total": round(sum(p[2] for p in cart), 2), "currency": "EUR",
                "payment": rng.choice(("card", "card", "paypal", "apple_pay"))}}, True, "order_created"))
            t += rng.randrange(5_000, 30_000)
        if rng.random() < _P_CHAT:
            push(t, ev, (c, "track", {"event_name": "chat_ended", "properties": {
                "duration_s": rng.randrange(40, 900), "agent": rng.choice(_AGENTS),
                "rating": rng.choice((3, 4, 5, 5, 5))}}, True, "chat_ended"))
        if rng.random() < _P_TX_EMAIL:
            name = rng.choice(_TX_TEMPLATES[2:])
            self._send_template(ts + rng.randrange(MINUTE, 6 * HOUR), c, name, _TEMPLATE_OPEN)
        if not c.subscribed and rng.random() < _P_LIST_IMPORT:
            self._push(ts + rng.randrange(HOUR, 12 * HOUR), self._list_addition,
                       (c, "list-1", "Newsletter", "newsletter_list"))

    def _form(self, t: int, c: _Contact) -> int:
        rng, props = self.rng, {"FIRSTNAME": c.first.capitalize()}
        if not c.subscribed and rng.random() < 0.7:
            form = ("form-newsletter", "Newsletter signup", "newsletter_form")
            self._push(t + rng.randrange(1_000, 8_000), self._list_addition, (c, "list-1", "Newsletter", None))
        elif rng.random() < 0.5:
            form = ("form-quote", "Request a quote", "quote_form")
            props["COMPANY"] = f"{c.last.capitalize()} & Co"
            self._push(t + rng.randrange(1_000, 8_000), self._list_addition, (c, "list-3", "Leads", None))
        else:
            form = ("form-contact", "Contact us", None)
        self._push(t, self._event, (c, "form", {"form_id": form[0], "form_name": form[1], "properties": props},
                                    True, form[2]))
        return t + rng.randrange(10_000, 60_000)

    def _list_addition(self, ts: int, p: tuple) -> None:
        c, list_id, list_name, trigger = p
        if list_id == "list-1":
            if c.subscribed and trigger:
                return  # an import of someone already subscribed changes nothing
            c.subscribed = True
        self._emit(ts, c, "list_addition", {"list_id": list_id, "list_name": list_name}, False)
        if trigger:
            self._trigger(ts, c, trigger)

    # --- emails --------------------------------------------------------------------------------
    def _message_id(self, ts: int) -> str:
        self.messages += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(ts // 1000))
        return f"<{stamp}.{self.messages:x}{self.rng.getrandbits(32):08x}@smtp-relay.example>"

    def _click_url(self, c: _Contact, source: str) -> str:
        acc = c.account
        p = self.rng.choice(acc.products)
        slug = source.lower().replace(" ", "-").replace("#", "")[:40]
        return f"{acc.host}/products/{p[0]}?utm_source=autologs&utm_medium=email&utm_campaign={slug}"

    def _engage(self, sent: int, c: _Contact, typ: str, fields: dict, p_open: float, p_click: float,
                p_unsub: float, source: str, journey: str | None = None) -> int | None:
        """Schedule the opens (then clicks, rare unsubscriptions) of one email; returns the first open."""
        rng, push, ev = self.rng, self._push, self._event
        if rng.random() >= p_open * min(2.0, 0.6 + 0.4 * c.activity):
            return None
        first = t = sent + int(rng.lognormvariate(math.log(40 * MINUTE), 1.3)) + SECOND
        while True:
            push(t, ev, (c, f"{typ}_opened", fields, True, None))
            if rng.random() >= _REOPEN:
                break
            t += int(rng.lognormvariate(math.log(2 * HOUR), 1.0)) + SECOND
        if rng.random() < p_click:
            t = first + rng.randrange(5 * SECOND, 5 * MINUTE)
            while True:
                url = self._click_url(c, source)
                push(t, ev, (c, f"{typ}_clicked", {**fields, "url": url}, True,
                             "campaign_clicked" if typ == "campaign" else None))
                if rng.random() < 0.5:  # the click lands on the site: a visit starts
                    self._push(t + rng.randrange(1_000, 5_000), self._landing,
                               (c, (url, f"{source} | {c.account.brand}", None)))
                if rng.random() >= _RECLICK:
                    break
                t += rng.randrange(10 * SECOND, 10 * MINUTE)
        if rng.random() < p_unsub:
            push(first + rng.randrange(20 * SECOND, 10 * MINUTE), self._unsubscribed,
                 (c, f"{typ}_unsubscribed", fields, journey))
        return first

    def _landing(self, ts: int, p: tuple) -> None:
        self._session(ts, p[0], landing=p[1])

    def _unsubscribed(self, ts: int, p: tuple) -> None:
        c, typ, fields, journey = p
        self._emit(ts, c, typ, fields, True)
        if typ == "campaign_unsubscribed":
            c.subscribed = False
        if journey is not None and (j := c.journeys.get(journey)) is not None:
            self._exit_soon(ts, c, j, "unsubscribed")

    def _send_template(self, ts: int, c: _Contact, name: str, p_open: float, journey: str | None = None,
                       ) -> tuple[str, int, int | None]:
        message_id = self._message_id(ts)
        template_id = c.account.templates[name]
        fields = {"template_id": template_id, "template_name": name, "message_id": message_id}
        opened = self._engage(ts, c, "templates", fields, p_open, _TEMPLATE_CLICK, _TEMPLATE_UNSUB, name, journey)
        return message_id, template_id, opened

    def _blast(self, ts: int, p: tuple) -> None:
        """A campaign goes to every subscribed contact of the account at once."""
        acc, campaign_id, name = p
        fields = {"campaign_id": campaign_id, "campaign_name": name}
        for c in acc.contacts:
            if c.subscribed:
                self._engage(ts, c, "campaign", fields, _CAMPAIGN_OPEN, _CAMPAIGN_CLICK, _CAMPAIGN_UNSUB, name)

    # --- automation journeys -----------------------------------------------------------------------
    def _trigger(self, ts: int, c: _Contact, trigger: str) -> None:
        rng = self.rng
        if trigger == "order_created":
            # The shop confirms the order at once and the shipment hours later; first orders make a customer.
            self._send_template(ts + rng.randrange(10 * SECOND, 2 * MINUTE), c, "Order confirmation", 0.8)
            self._send_template(ts + rng.randrange(2 * HOUR, 20 * HOUR), c, "Shipping confirmation", 0.7)
            if not c.customer:
                c.customer = True
                self._push(ts + rng.randrange(1_000, 20_000), self._list_addition, (c, "list-2", "Customers", None))
            for j in list(c.journeys.values()):
                if j.scenario.goal == "order_created":
                    self._exit_soon(ts, c, j, "goal_reached")
        for scenario in c.account.triggers.get(trigger, ()):
            aid = scenario.automation_id
            j = c.journeys.get(aid)
            if j is None:
                if rng.random() < scenario.enter:
                    self.tokens += 1
                    c.journeys[aid] = j = _Journey(scenario, self.tokens, scenario.start_ids[trigger], ts)
                    self._push(ts + rng.randrange(200, 3_000), self._j_started, (c, scenario, j.token))
            elif scenario.restart and ts - j.started > _RESTART_AFTER and j.token > 0 and rng.random() < 0.5:
                self.tokens += 1
                j.token, j.started, j.step, j.last_open = self.tokens, ts, 0, None
                self._push(ts + rng.randrange(200, 3_000), self._j_restarted, (c, scenario, j.token))

    def _live(self, c: _Contact, scenario: _Scenario, token: int) -> _Journey | None:
        j = c.journeys.get(scenario.automation_id)
        return j if j is not None and j.token == token else None

    def _fields(self, scenario: _Scenario, j: _Journey, step: int) -> dict:
        return {"automation_id": scenario.automation_id, "automation_name": scenario.name,
                "step_id": scenario.step_ids[step] if step < len(scenario.step_ids) else "",
                "start_id": j.start_id, "entry_points": scenario.entry_points}

    def _j_started(self, ts: int, p: tuple) -> None:
        c, scenario, token = p
        if (j := self._live(c, scenario, token)) is None:
            return
        j.step = 0
        self._emit(ts, c, "automation_started", self._fields(scenario, j, 0), False)
        self._next_step(ts + self.rng.randrange(50, 1_500), c, scenario, j, 0)

    def _j_restarted(self, ts: int, p: tuple) -> None:
        c, scenario, token = p
        if (j := self._live(c, scenario, token)) is None:
            return
        self._emit(ts, c, "automation_restarted", self._fields(scenario, j, 0), False)
        self._next_step(ts + self.rng.randrange(50, 1_500), c, scenario, j, 0)

    def _next_step(self, ts: int, c: _Contact, scenario: _Scenario, j: _Journey, step: int) -> None:
        if step < len(scenario.steps):
            self._push(ts, self._j_step, (c, scenario, j.token, step))
        else:
            self._push(ts, self._j_exited, (c, scenario, j.token, "completed"))

    def _j_step(self, ts: int, p: tuple) -> None:
        c, scenario, token, step = p
        if (j := self._live(c, scenario, token)) is None:
            return
        rng = self.rng
        j.step = step
        name, kind, arg = scenario.steps[step]
        fields = self._fields(scenario, j, step)
        self._emit(ts, c, "automation_step_reached", {**fields, "step_name": name}, False)
        t = ts + rng.randrange(100, 3_000)
        if kind == "email":
            self._push(t, self._j_send, (c, scenario, token, step))
            self._next_step(t + rng.randrange(1_000, 30_000), c, scenario, j, step + 1)
        elif kind == "action":
            self._push(t, self._event, (c, "automation_action", {**fields, "action": arg}, False, None))
            self._next_step(t + rng.randrange(1_000, 30_000), c, scenario, j, step + 1)
        elif kind == "wait":
            until = ts + arg[0]
            self._push(t, self._j_waiting, (c, scenario, token, {**fields, "wait_for": arg[1],
                                                                 "wait_until": self._iso(until)}))
            self._next_step(until + rng.randrange(0, 2 * MINUTE), c, scenario, j, step + 1)
        else:  # condition
            met = (j.last_open is not None and j.last_open <= ts) if arg == "opened" else rng.random() < arg
            if met:
                self._next_step(t, c, scenario, j, step + 1)
            else:
                self._push(t, self._j_exited, (c, scenario, token, "condition_not_met"))

    def _j_waiting(self, ts: int, p: tuple) -> None:
        c, scenario, token, fields = p
        if self._live(c, scenario, token) is not None:
            self._emit(ts, c, "automation_waiting", fields, False)

    def _j_send(self, ts: int, p: tuple) -> None:
        c, scenario, token, step = p
        if (j := self._live(c, scenario, token)) is None:
            return
        name = scenario.steps[step][2]
        message_id, template_id, opened = self._send_template(ts, c, name, _TEMPLATE_OPEN * 0.8,
                                                              journey=scenario.automation_id)
        self._emit(ts, c, "automation_action", {**self._fields(scenario, j, step), "action": "send_email",
                                                 "message_id": message_id, "template_id": template_id,
                                                 "template_name": name}, False)
        j.last_open = opened

    def _exit_soon(self, ts: int, c: _Contact, j: _Journey, reason: str) -> None:
        """End a journey early: a fresh token voids its pending steps; the exit follows in a moment."""
        if j.token <= 0:
            return  # already exiting
        if j.step < 0:  # its start is not out yet: it never happened
            del c.journeys[j.scenario.automation_id]
            return
        self.tokens += 1
        j.token = -self.tokens
        self._push(ts + self.rng.randrange(200, 5_000), self._j_exited, (c, j.scenario, j.token, reason))

    def _j_exited(self, ts: int, p: tuple) -> None:
        c, scenario, token, reason = p
        if (j := self._live(c, scenario, token)) is None:
            return
        fields = self._fields(scenario, j, j.step)
        fields["reason"] = reason
        self._emit(ts, c, "automation_exited", fields, False)
        del c.journeys[scenario.automation_id]


def generate(spec: SimulationSpec) -> Iterator[dict]:
    """Events of the spec, JSON-ready and ordered by occurred_at; lazy, so a million costs no memory."""
    return _Simulation(spec).run()


# --- deliberately broken input ----------------------------------------------------------------------
def invalid_samples() -> list[bytes]:
    """Messages the pipeline must dead-letter, one per way real producers get it wrong."""
    now = datetime.now(timezone.utc)
    base = {"event_id": "sim-invalid", "type": "page", "account_id": "acct-1",
            "occurred_at": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "contact_id": 1,
            "email": "camille.martin1@example.com", "url": "https://www.maison-lumiere.example/"}

    def variant(**changes: Any) -> bytes:
        d = {**base, **changes}
        return orjson.dumps({k: v for k, v in d.items() if v is not ...})

    return [
        b"{this is not json",
        orjson.dumps([base]),
        variant(event_id="sim-invalid-type", type="sms_delivered"),
        variant(event_id="sim-invalid-contact", contact_id=..., email=...),
        variant(event_id="sim-invalid-email", email="camille.martin@@example"),
        variant(event_id="sim-invalid-size", type="track", url=..., event_name="order_created",
                properties={"blob": "x" * (60 * 1024)}),
        variant(event_id="sim-invalid-future",
                occurred_at=(now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")),
        variant(event_id="sim-invalid-types", contact_id="forty-two", url=["not", "a", "string"]),
        b"",
        b"\xff\xfe not utf-8",
    ]


# --- sending ------------------------------------------------------------------------------------------
class _Feed:
    """(key, value) pairs: serialized events with, every N, one broken message; counts both."""

    def __init__(self, spec: SimulationSpec, invalid_every: int = 0) -> None:
        self.spec, self.invalid_every = spec, invalid_every
        self.valid = self.invalid = 0

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes]]:
        dumps, every = orjson.dumps, self.invalid_every
        bad = cycle(invalid_samples()) if every > 0 else None
        for ev in generate(self.spec):
            self.valid += 1
            yield partition_key(ev["account_id"], ev["email"], ev["contact_id"]), dumps(ev)
            if bad is not None and self.valid % every == 0:
                self.invalid += 1
                yield b"simulate:invalid", next(bad)


def _paced(items: Iterator, rate: float | None, chunk_s: float = 1.0) -> Iterator[list]:
    """Chunks of about `chunk_s` seconds of messages, sleeping between chunks to hold `rate`/s."""
    size = max(1, int(rate * chunk_s)) if rate else 20_000
    began, done = time.monotonic(), 0
    while batch := list(islice(items, size)):
        yield batch
        done += len(batch)
        if rate:
            delay = began + done / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


async def run_simulation(settings, spec: SimulationSpec, rate: float | None = None,
                         progress: Callable[[int], None] | None = None, invalid_every: int = 0) -> int:
    """Publish the spec's events (and broken messages every `invalid_every`) to the events topic.

    Unlimited: one producer for the whole lazy stream. With `rate`: one publish per second's worth of
    messages, then an asyncio sleep, since `publish` takes a plain iterable that cannot pause.
    """
    from streams.produce import publish
    from streams.topics import ensure_topics, topics

    await ensure_topics(settings)
    topic = topics(settings).events
    feed = iter(_Feed(spec, invalid_every))
    if not rate:
        return await publish(settings, topic, feed, progress=progress)
    loop = asyncio.get_running_loop()
    began, sent = loop.time(), 0
    size = max(1, int(rate))
    while batch := list(islice(feed, size)):
        sent += await publish(settings, topic, batch, progress=progress)
        delay = began + sent / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


class _Progress:
    """A line on stderr at most once a second: how many sent, how fast."""

    def __init__(self, what: str) -> None:
        self.what, self.total = what, 0
        self.began = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.total += n
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            click.echo(f"{self.what}: {self.total:,} messages ({self.total / (now - self.began):,.0f}/s)", err=True)

    def rate(self) -> float:
        return self.total / max(time.monotonic() - self.began, 1e-9)


def _parse_start(ctx, param, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use an ISO date or date-time, e.g. 2026-11-20 or 2026-11-20T06:00Z") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@click.command("simulate")
@click.option("--seed", default=42, show_default=True, help="Same seed and options, same events.")
@click.option("--accounts", default=3, show_default=True, help="Accounts (acct-1, acct-2, ...).")
@click.option("--contacts", default=1000, show_default=True, help="Contacts in total, spread over the accounts.")
@click.option("--scenarios", default=3, show_default=True, help="Automation scenarios per account.")
@click.option("--days", default=1, show_default=True, help="Days simulated, ending at today's UTC midnight.")
@click.option("--start", callback=_parse_start, help="Start of the period instead (UTC unless an offset is given).")
@click.option("--internal-ratio", default=0.3, show_default=True, help="Share of events without ip.")
@click.option("--limit", type=int, help="Stop after this many events.")
@click.option("--rate", type=float, help="Events per second at most (default: as fast as possible).")
@click.option("--invalid-every", default=0, show_default=True,
              help="After every N events also send one broken message (0: none).")
@click.option("--dry-run", is_flag=True, help="Print the messages, one per line, instead of sending them.")
def simulate_command(seed: int, accounts: int, contacts: int, scenarios: int, days: int, start: datetime | None,
                     internal_ratio: float, limit: int | None, rate: float | None, invalid_every: int,
                     dry_run: bool) -> None:
    """Send a realistic synthetic workload to the events topic.

    Contacts of each account browse the shop (page views, clicks, cart and order events, forms),
    receive a campaign a day and transactional emails (opens, clicks, rare unsubscriptions), and go
    through automation scenarios (Welcome series, Abandoned cart, Post-purchase, ...) step by step;
    about a third of the journeys are still running or waiting when the period ends. The output is
    deterministic: the same options give the same events (event ids sim-SEED-OPTIONS-N), ordered by time.
    About 7.5 events per contact and day: --contacts 140000 --limit 1000000 gives exactly a million.

    --dry-run prints the JSON lines instead (feed them to `autologs produce` later). Progress goes
    to stderr.
    """
    from autologs.config import get_settings

    if rate is not None and rate <= 0:
        raise click.BadParameter("must be > 0", param_hint="--rate")
    try:
        spec = SimulationSpec(seed=seed, accounts=accounts, contacts=contacts, scenarios=scenarios, days=days,
                              start=start, internal_ratio=internal_ratio, max_events=limit)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if spec.end > datetime.now(timezone.utc) + timedelta(hours=24):
        raise click.UsageError("the period ends more than 24 hours from now: those events would be rejected")
    if dry_run:
        out = click.get_binary_stream("stdout")
        feed = _Feed(spec, invalid_every)
        show = _Progress("generated")
        for batch in _paced(iter(feed), rate):
            out.write(b"".join(value + b"\n" for _key, value in batch))
            show(len(batch))
        out.flush()
        click.echo(f"{feed.valid:,} events and {feed.invalid:,} broken messages printed "
                   f"({show.rate():,.0f}/s)", err=True)
        return
    settings = get_settings()
    show = _Progress("sent")
    began = time.monotonic()
    try:
        sent = asyncio.run(run_simulation(settings, spec, rate=rate, progress=show, invalid_every=invalid_every))
    except Exception as exc:  # the broker is the usual culprit; say how to get one
        raise click.ClickException(
            f"sending to Kafka at {settings.kafka_bootstrap} failed ({exc!r}). Start a broker with "
            "`autologs broker start` or set AUTOLOGS_KAFKA_BOOTSTRAP.") from None
    took = time.monotonic() - began
    click.echo(f"{sent:,} messages sent to {settings.topic_prefix}.events in {took:.1f}s "
               f"({sent / max(took, 1e-9):,.0f}/s)", err=True)
