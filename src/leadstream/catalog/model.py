"""Activity types, audit components/actions and notification kinds, with per-tenant extensions.

The standard types ship as package data (copied from the reference files). A tenant extends or
overrides them by loading its Marketo *Get Activity Types* response; custom activity types
(ids >= 100000) go through the same loader. Lookups are plain dict hits: they sit on the ingest
hot path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from leadstream.errors import CatalogError

CUSTOM_ACTIVITY_MIN_ID = 100_000
MAX_TYPE_ID = 2**63 - 1  # activity type ids are the store's integers
CE_PREFIX = "com.adobe.platform.marketo"


def _squash(name: str) -> str:
    return name.lower().replace(" ", "")


def activity_ce_type(activity: ActivityType) -> str:
    if activity.custom:
        return f"{CE_PREFIX}.activity.custom"
    return f"{CE_PREFIX}.activity.standard.{_squash(activity.name)}"


def audit_ce_type(component: str) -> str:
    return f"{CE_PREFIX}.audit.user.{_squash(component)}"


def notification_ce_type(kind: str) -> str:
    return f"{CE_PREFIX}.notification.{kind}"


def custom_object_ce_type(api_name: str) -> str:
    return f"{CE_PREFIX}.customobject.{api_name.lower()}"


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    data_type: str  # as delivered in `dataType`; undocumented types are delivered as "string"

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "dataType": self.data_type}


@dataclass(frozen=True, slots=True)
class ActivityType:
    id: int
    name: str
    description: str | None = None
    primary_attribute: Attribute | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)

    @property
    def custom(self) -> bool:
        return self.id >= CUSTOM_ACTIVITY_MIN_ID

    @property
    def ce_type(self) -> str:
        return activity_ce_type(self)

    def data_type(self, attribute_name: str) -> str:
        attribute = self.attributes.get(attribute_name)
        if attribute is None and self.primary_attribute and self.primary_attribute.name == attribute_name:
            attribute = self.primary_attribute
        return attribute.data_type if attribute else "string"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "primaryAttribute": self.primary_attribute.as_json() if self.primary_attribute else None,
            "attributes": [a.as_json() for a in self.attributes.values()],
            "custom": self.custom,
            "type": self.ce_type,
        }


@dataclass(frozen=True, slots=True)
class NotificationKind:
    kind: str
    name: str
    sub_types: tuple[str, ...]
    event_action: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "subTypes": list(self.sub_types),
            "eventAction": self.event_action,
            "type": notification_ce_type(self.kind),
        }


def _attribute(raw: Any, where: str) -> Attribute:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise CatalogError(f"{where}: an attribute needs a non-empty string 'name', got {raw!r}")
    data_type = raw.get("dataType")
    if data_type is not None and not isinstance(data_type, str):
        raise CatalogError(f"{where}.dataType: expected a string, got {data_type!r}")
    return Attribute(raw["name"], data_type or "string")


def parse_activity_type(raw: Any, where: str = "result") -> ActivityType:
    """One entry of a Get Activity Types response (or of the package data)."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected an object, got {raw!r}")
    type_id, name = raw.get("id"), raw.get("name")
    if not isinstance(type_id, int) or isinstance(type_id, bool) or not 0 < type_id <= MAX_TYPE_ID:
        raise CatalogError(f"{where}.id: expected a positive 64-bit integer, got {type_id!r}")
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"{where}.name: expected a non-empty string, got {name!r}")
    primary = raw.get("primaryAttribute")
    attributes = raw.get("attributes")
    attributes = [] if attributes is None else attributes  # {} or "" is wrong, not "none"
    if not isinstance(attributes, list):
        raise CatalogError(f"{where}.attributes: expected a list, got {attributes!r}")
    parsed = [_attribute(a, f"{where}.attributes[{i}]") for i, a in enumerate(attributes)]
    return ActivityType(
        id=type_id,
        name=name,
        description=raw.get("description") if isinstance(raw.get("description"), str) else None,
        primary_attribute=_attribute(primary, f"{where}.primaryAttribute") if primary is not None else None,
        attributes={a.name: a for a in parsed},
    )


def _data(name: str) -> Any:
    return json.loads(resources.files("leadstream.catalog").joinpath("data", name).read_text("utf-8"))


class Catalog:
    """The standard catalog plus per-tenant activity types.

    Tenant documents are kept as loaded (``tenant_documents``) so that the store can persist them
    and a restart can replay them with ``load_activity_types``.
    """

    def __init__(self) -> None:
        self.activity_types: dict[int, ActivityType] = {
            t.id: t
            for i, raw in enumerate(_data("activity-types.json")["activityTypes"])
            for t in [parse_activity_type(raw, f"activityTypes[{i}]")]
        }
        stream_types = _data("stream-event-types.json")
        self.audit_components: dict[str, frozenset[str]] = {
            c["component"]: frozenset(c["actions"]) for c in stream_types["user_audit"]
        }
        self.notification_kinds: dict[str, NotificationKind] = {
            k["kind"]: NotificationKind(k["kind"], k["name"], tuple(k["subTypes"]), k["eventAction"])
            for k in _data("notification-kinds.json")["kinds"]
        }
        self._tenant_types: dict[str, dict[int, ActivityType]] = {}
        self.tenant_documents: dict[str, list[dict[str, Any]]] = {}

    # -- lookups (hot path) -------------------------------------------------------------------
    def activity_type(self, munchkin_id: str, type_id: int) -> ActivityType | None:
        tenant = self._tenant_types.get(munchkin_id)
        if tenant is not None:
            found = tenant.get(type_id)
            if found is not None:
                return found
        return self.activity_types.get(type_id)

    def activity_type_named(self, name: str, munchkin_id: str | None = None) -> ActivityType | None:
        """Case-insensitive name lookup, for subscription filters written with names."""
        wanted = name.strip().lower()
        for t in self.tenant_types(munchkin_id).values():
            if t.name.lower() == wanted:
                return t
        return None

    def tenant_types(self, munchkin_id: str | None) -> dict[int, ActivityType]:
        merged = dict(self.activity_types)
        if munchkin_id:
            merged.update(self._tenant_types.get(munchkin_id, {}))
        return merged

    # -- loaders ------------------------------------------------------------------------------
    def load_activity_types(self, munchkin_id: str, response: Any, *, custom_only: bool = False) -> int:
        """Add or override a tenant's types from a Get Activity Types response.

        ``response`` is ``{"result": [...]}`` (as Marketo answers) or the bare list. With
        ``custom_only`` every id must be >= 100000 (the custom activity type loader).
        Returns how many types were loaded; loads nothing if any entry is bad.
        """
        entries = response.get("result") if isinstance(response, dict) else response
        if not isinstance(entries, list) or not entries:
            raise CatalogError('expected {"result": [activity types…]} with at least one type')
        parsed = [parse_activity_type(raw, f"result[{i}]") for i, raw in enumerate(entries)]
        if custom_only:
            for i, t in enumerate(parsed):
                if not t.custom:
                    raise CatalogError(
                        f"result[{i}].id: custom activity types need an id >= {CUSTOM_ACTIVITY_MIN_ID}, got {t.id}"
                    )
        self._tenant_types.setdefault(munchkin_id, {}).update((t.id, t) for t in parsed)
        self.tenant_documents.setdefault(munchkin_id, []).extend(entries)
        return len(parsed)

    # -- what GET /v1/catalog/{stream} serves -----------------------------------------------
    def describe(self, stream: str, munchkin_id: str | None = None) -> list[dict[str, Any]]:
        if stream == "activity":
            return [t.as_json() for t in sorted(self.tenant_types(munchkin_id).values(), key=lambda t: t.id)]
        if stream == "audit":
            return [
                {"component": c, "actions": sorted(a), "type": audit_ce_type(c)}
                for c, a in sorted(self.audit_components.items())
            ]
        if stream == "notification":
            return [k.as_json() for k in self.notification_kinds.values()]
        raise KeyError(stream)
