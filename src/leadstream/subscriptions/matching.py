"""Which events a subscription takes: its stream, tenant and event types, and its own ``filter``.

Compiled once per subscription into one predicate over stored events, so the hot path asks one
question per event. Types are resolved against the catalog here (an unknown one is Invalid,
naming the entry), which is also how creating and patching a subscription checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from leadstream import formats
from leadstream.catalog import Catalog
from leadstream.errors import Invalid, LeadstreamError
from leadstream.events import Event
from leadstream.filtering import compile_pattern
from leadstream.subscriptions.config import SubscriptionConfig

Matcher = Callable[[Event], bool]


def compile_type_filter(config: SubscriptionConfig, catalog: Catalog) -> Matcher:
    """The subscription's stream, tenant and event types as one predicate over events.

    Types are checked against the catalog (Invalid names the entry). Activity names resolve to
    ids once, here; ``"*"`` takes every activity type, present and future, but custom objects
    only with ``customObjects``.
    """
    stream, munchkin = config.stream, config.munchkinId
    wanted: set[str] = set()
    everything = False
    if not config.eventTypes and not (stream == "activity" and config.customObjects):
        raise Invalid('eventTypes: name at least one type, or ["*"] for all', field="eventTypes")
    for index, entry in enumerate(config.eventTypes):
        where = f"eventTypes[{index}]"
        if entry == "*":
            everything = True
        elif stream == "activity":
            wanted.add(_activity_etype(entry, catalog, munchkin, where))
        elif stream == "audit":
            wanted.update(_audit_etypes(entry, catalog, where))
        else:
            wanted.add(_notification_etype(entry, catalog, where))
    if stream == "activity":
        custom_objects = config.customObjects
        if everything:
            return lambda e: (
                e.munchkin_id == munchkin and e.stream == stream and (custom_objects or not e.etype.startswith("co:"))
            )
        return lambda e: (
            e.munchkin_id == munchkin
            and e.stream == stream
            and (e.etype in wanted or (custom_objects and e.etype.startswith("co:")))
        )
    if everything:
        return lambda e: e.munchkin_id == munchkin and e.stream == stream
    return lambda e: e.munchkin_id == munchkin and e.stream == stream and e.etype in wanted


def _activity_etype(entry: int | str, catalog: Catalog, munchkin: str, where: str) -> str:
    if isinstance(entry, int) or (isinstance(entry, str) and entry.strip().isdigit()):
        type_id = int(entry)
        if catalog.activity_type(munchkin, type_id) is None:
            raise Invalid(f"{where}: {type_id} is not an activity type id of the catalog of {munchkin}", field=where)
        return str(type_id)
    found = catalog.activity_type_named(entry, munchkin)
    if found is None:
        raise Invalid(f"{where}: {entry!r} is not an activity type name of the catalog of {munchkin}", field=where)
    return str(found.id)


def _audit_etypes(entry: int | str, catalog: Catalog, where: str) -> set[str]:
    """ "Email" → every action of Email; "Email:approve" → that one (names matched case-insensitively)."""
    if not isinstance(entry, str):
        raise Invalid(f"{where}: audit types are a component or component:action, got {entry!r}", field=where)
    component_name, _, action_name = entry.partition(":")
    by_lower = {c.lower(): c for c in catalog.audit_components}
    component = by_lower.get(component_name.strip().lower())
    if component is None:
        raise Invalid(f"{where}: {component_name!r} is not an audit component of the catalog", field=where)
    actions = catalog.audit_components[component]
    if not action_name:
        return {f"{component}:{a}" for a in actions}
    action = {a.lower(): a for a in actions}.get(action_name.strip().lower())
    if action is None:
        raise Invalid(
            f"{where}: {action_name!r} is not an action of {component!r} (one of: {', '.join(sorted(actions))})",
            field=where,
        )
    return {f"{component}:{action}"}


def _notification_etype(entry: int | str, catalog: Catalog, where: str) -> str:
    if not isinstance(entry, str) or entry not in catalog.notification_kinds:
        raise Invalid(
            f"{where}: {entry!r} is not a notification kind (one of: {', '.join(catalog.notification_kinds)})",
            field=where,
        )
    return entry


def compile_matcher(config: SubscriptionConfig, catalog: Catalog, sub_id: str) -> Matcher:
    """Everything that decides whether an event goes to this subscription: stream, tenant, event
    types, and the subscriber's own ``filter`` over the CloudEvent (SPEC §5), if any."""
    by_type = compile_type_filter(config, catalog)
    if config.filter is None:
        return by_type
    pattern = compile_pattern(config.filter)
    return lambda e: by_type(e) and pattern(formats.cloudevent(e, subscription_id=sub_id))


def takes_every_event(config: SubscriptionConfig, matcher: Matcher) -> Literal["all", "activities"] | None:
    """Whether ``matcher`` takes every event of its stream and tenant ("all"), every one but the
    custom objects ("activities"), or decides event by event (None): the senders skip matching
    for the first two."""
    if matcher is _nothing or config.filter is not None or "*" not in config.eventTypes:
        return None
    return "activities" if config.stream == "activity" and not config.customObjects else "all"


def compile_leniently(config: SubscriptionConfig, catalog: Catalog, sub_id: str) -> tuple[Matcher, str | None]:
    """``compile_matcher`` for a subscription that exists already: when its types or filter no
    longer compile (a tenant type left the catalog), it takes nothing, and the reason is returned."""
    try:
        return compile_matcher(config, catalog, sub_id), None
    except LeadstreamError as exc:
        return _nothing, f"filter: {exc.detail}"


def _nothing(event: Event) -> bool:
    return False
