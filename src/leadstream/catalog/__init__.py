"""The catalog: which event types exist, per stream and per tenant (SPEC §1.1)."""

from leadstream.catalog.model import (
    ActivityType,
    Attribute,
    Catalog,
    NotificationKind,
    activity_ce_type,
    audit_ce_type,
    custom_object_ce_type,
    notification_ce_type,
)

__all__ = [
    "ActivityType",
    "Attribute",
    "Catalog",
    "NotificationKind",
    "activity_ce_type",
    "audit_ce_type",
    "custom_object_ce_type",
    "notification_ce_type",
]
