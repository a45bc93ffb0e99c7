"""A policy document (GET /v1/policy) or a change to one (GET /v1/policy/changes) checked whole
before the agent renders anything from it. The agent does not trust what it is sent — a fake
or compromised server, or anything between the two — so every value that lands in a proxy's
files is held to the rule the admin API applies to it (core/values.py: addresses, ranges, AS
numbers, users, tier names and limits; enforcer/imagelist.py: image patterns), and every
other field to its type. A problem is a Malformed naming where it is.

Fields the agent does not read (generated_at, max_age, a section a newer server adds) pass
unchecked: an older agent keeps working with a newer server.
"""
from __future__ import annotations

from core import values
from enforcer.imagelist import canonical_pattern

# The most a policy answer may unpack to: 100,000 bans are 15 MB of JSON, and parsed, an agent
# holds about ten times that (pullwarden agent --max-policy-mb). Kept here, not in the agent: every
# CLI command's start-up reads it to declare that option, and importing the agent takes 80 ms
MAX_POLICY_MB = 256

SCOPES = ("ip", "range", "asn", "user")
EFFECTS = ("throttle", "boost")
LISTS = ("allowed", "unlimited", "blocked")
SMALL = ("allowlist", "default_tiers", "images", "tiers")
ID_MAX = 2**63 - 1
# A reason is a person's (at most 500 characters through the API) or a rule's template with its
# numbers; both are quoted where they are written. nginx takes a quoted string of up to 4 KiB,
# and escaping may double it.
TEXT_MAX = 2000


class Malformed(ValueError):
    """The answer is not a policy the agent can render."""


def _at(where: str, why: str) -> Malformed:
    return Malformed(f"{where}: {why}")


def _int(v, where: str, low: int = 0, high: int = ID_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise _at(where, f"a whole number from {low} to {high} was expected, not {_shown(v)}")
    return v


def _str(v, where: str, limit: int = TEXT_MAX) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise _at(where, f"a string of at most {limit} characters was expected, not {_shown(v)}")
    return v


def _dict(v, where: str, required=()) -> dict:
    if not isinstance(v, dict):
        raise _at(where, f"an object was expected, not {_shown(v)}")
    missing = [k for k in required if k not in v]
    if missing:
        raise _at(where, f"{', '.join(missing)} missing")
    return v


def _list(v, where: str) -> list:
    if not isinstance(v, list):
        raise _at(where, f"a list was expected, not {_shown(v)}")
    return v


def _shown(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _value(fn, v, where: str):
    """One of core/values' checks, its refusal placed."""
    try:
        return fn(v)
    except ValueError as e:
        raise _at(where, str(e)) from None


def entry(e, where: str, section: str) -> str:
    """A ban or a tier assignment; returns its key (scope:value)."""
    _dict(e, where, ("id", "scope", "value", "until", "reason", "rule"))
    _int(e["id"], f"{where}.id")
    scope = e["scope"]
    if scope not in SCOPES:
        raise _at(f"{where}.scope", f"one of {', '.join(SCOPES)} was expected, not {_shown(scope)}")
    value = _str(e["value"], f"{where}.value", 200)
    _value(lambda v: values.canonical(scope, v), value, f"{where}.value")
    _str(e["until"], f"{where}.until", 64)
    _str(e["reason"], f"{where}.reason")
    _str(e["rule"], f"{where}.rule", 200)
    if section == "assignments":
        _dict(e, where, ("effect", "tier"))
        if e["effect"] not in EFFECTS:
            raise _at(f"{where}.effect", f"throttle or boost was expected, not {_shown(e['effect'])}")
        _value(values.tier_name, e["tier"], f"{where}.tier")
    return f"{scope}:{value}"


def entries(section: str, v, where: str) -> dict:
    for key, e in _dict(v, where).items():
        if entry(e, f"{where}[{key!r}]", section) != key:
            raise _at(f"{where}[{key!r}]", "the key is not the entry's scope:value")
    return v


def tiers(v, where: str = "tiers") -> dict:
    _value(values.tier_names, list(_dict(v, where)), where)
    for name, limits in v.items():
        _dict(limits, f"{where}[{name!r}]", values.TIER_LIMITS)
        for field in values.TIER_LIMITS:
            _value(lambda x: values.tier_limit(field, x), limits[field], f"{where}[{name!r}].{field}")
    return v


def default_tiers(v, where: str = "default_tiers") -> dict:
    _dict(v, where, ("anonymous", "authenticated"))
    for kind in ("anonymous", "authenticated"):
        _value(values.tier_name, v[kind], f"{where}.{kind}")
    return v


def images(v, where: str = "images") -> dict:
    _dict(v, where, LISTS)
    for name in LISTS:
        for i, p in enumerate(_list(v[name], f"{where}.{name}")):
            _value(canonical_pattern, _str(p, f"{where}.{name}[{i}]", 300), f"{where}.{name}[{i}]")
    return v


def allowlist(v, where: str = "allowlist") -> list:
    for i, n in enumerate(_list(v, where)):
        _value(values.network, _str(n, f"{where}[{i}]", 100), f"{where}[{i}]")
    return v


def requests(v, where: str = "requests") -> dict:
    """How nginx reads a request's image (the registry for a path without one, a Host's registry):
    each host lands in the include as a map key or value."""
    _dict(v, where, ("default_registry", "host_registries", "upstream_checks_credentials"))
    _value(values.registry_host, v["default_registry"], f"{where}.default_registry")
    for host, registry in _dict(v["host_registries"], f"{where}.host_registries").items():
        _value(values.registry_host, host, f"{where}.host_registries key")
        _value(values.registry_host, registry, f"{where}.host_registries[{host!r}]")
    if not isinstance(v["upstream_checks_credentials"], bool):
        raise _at(f"{where}.upstream_checks_credentials", f"true or false was expected, not {_shown(v['upstream_checks_credentials'])}")
    return v


def asn_networks(v, where: str = "asn_networks") -> dict:
    """The networks of each banned AS number: written into nginx's geo and CRProxy's list."""
    for asn, nets in _dict(v, where).items():
        if _value(values.asn, asn, f"{where} key") != asn:
            raise _at(f"{where}[{asn!r}]", "an AS number is written as its digits alone")
        for i, n in enumerate(_list(nets, f"{where}[{asn!r}]")):
            _value(values.network, _str(n, f"{where}[{asn!r}][{i}]", 100), f"{where}[{asn!r}][{i}]")
    return v


SECTIONS = {"tiers": tiers, "default_tiers": default_tiers, "images": images, "allowlist": allowlist,
            "requests": requests, "asn_networks": asn_networks}


def policy(doc) -> dict:
    """The whole policy, as GET /v1/policy sends it."""
    _dict(doc, "the policy", ("version", "bans", "assignments", "tiers", "default_tiers", "images"))
    _int(doc["version"], "version")
    for section in ("bans", "assignments"):
        entries(section, doc[section], section)
    for name, check in SECTIONS.items():
        if name in doc:
            check(doc[name])
    return doc


def delta(doc, since: int) -> dict:
    """A change from version ``since``, as GET /v1/policy/changes?since= sends it."""
    _dict(doc, "the change", ("since", "version", "upsert", "remove", "sections"))
    if _int(doc["since"], "since") != since:
        raise _at("since", f"a change from version {since} was asked for, not from {doc['since']}")
    _int(doc["version"], "version", since)
    for part in ("upsert", "remove"):
        _dict(doc[part], part, ("bans", "assignments"))
        for section in ("bans", "assignments"):
            for i, e in enumerate(_list(doc[part][section], f"{part}.{section}")):
                where = f"{part}.{section}[{i}]"
                if part == "upsert":
                    entry(e, where, section)
                else:
                    _str(_dict(e, where, ("key",))["key"], f"{where}.key", 210)
    for name, v in _dict(doc["sections"], "sections").items():
        if name in SECTIONS:
            SECTIONS[name](v, f"sections.{name}")
    return doc
