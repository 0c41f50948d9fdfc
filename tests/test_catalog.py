"""The catalog (SPEC §1.1): reference types, CloudEvents names, per-tenant extensions."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from helpers import MUNCHKIN, activity, publish, running_server
from leadstream.catalog import Catalog, audit_ce_type, custom_object_ce_type, notification_ce_type
from leadstream.errors import CatalogError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
OTHER = "999-ZZZ-999"


def reference(name: str) -> dict:
    path = REFERENCE / name
    if not path.exists():  # CI lays shared/ beside the clone as well; the package data is a copy of it
        path = (
            Path(__file__).resolve().parents[1]
            / "src/leadstream/catalog/data"
            / ("activity-types.json" if "activity" in name else "stream-event-types.json")
        )
    return json.loads(path.read_text())


def test_every_reference_activity_type_loads_with_its_attributes():
    catalog = Catalog()
    types = reference("marketo-activity-types.json")["activityTypes"]
    assert len(types) == 74 == len(catalog.activity_types)
    for raw in types:
        loaded = catalog.activity_type(MUNCHKIN, raw["id"])
        assert loaded is not None and loaded.name == raw["name"]
        assert [a.name for a in loaded.attributes.values()] == [a["name"] for a in raw["attributes"]]
        for a in raw["attributes"]:
            assert loaded.data_type(a["name"]) == (a["dataType"] or "string")
        if raw.get("primaryAttribute"):
            assert loaded.primary_attribute.name == raw["primaryAttribute"]["name"]


def test_audit_components_and_notification_kinds():
    catalog = Catalog()
    for component in reference("marketo-stream-event-types.json")["user_audit"]:
        assert catalog.audit_components[component["component"]] == frozenset(component["actions"])
        documented = component.get("type") or component.get("type_inferred")
        assert audit_ce_type(component["component"]) == documented
    documented_kinds = {"campaign_abort", "campaign_failure", "web_services"}
    assert documented_kinds <= set(catalog.notification_kinds)
    assert notification_ce_type("campaign_abort") == "com.adobe.platform.marketo.notification.campaign_abort"


def test_cloudevents_type_names():
    catalog = Catalog()
    assert catalog.activity_type(MUNCHKIN, 10).ce_type == "com.adobe.platform.marketo.activity.standard.openemail"
    assert catalog.activity_type(MUNCHKIN, 1).ce_type == "com.adobe.platform.marketo.activity.standard.visitwebpage"
    assert audit_ce_type("Landing Page") == "com.adobe.platform.marketo.audit.user.landingpage"
    assert custom_object_ce_type("Car_C") == "com.adobe.platform.marketo.customobject.car_c"
    catalog.load_activity_types(MUNCHKIN, {"result": [{"id": 100042, "name": "Attend Webinar"}]}, custom_only=True)
    assert catalog.activity_type(MUNCHKIN, 100042).ce_type == "com.adobe.platform.marketo.activity.custom"


GET_ACTIVITY_TYPES = {
    "requestId": "abc#123",
    "success": True,
    "result": [
        {
            "id": 10,
            "name": "Open Email",
            "description": "Tenant's own wording",
            "primaryAttribute": {"name": "Mailing ID", "dataType": "integer"},
            "attributes": [
                {"name": "Device", "dataType": "string"},
                {"name": "Is Mobile Device", "dataType": "boolean"},
            ],
        },
        {
            "id": 400000,
            "name": "Webinar Attended",
            "primaryAttribute": {"name": "Webinar", "dataType": "string"},
            "attributes": [{"name": "Minutes", "dataType": "integer"}],
        },
        {"id": 171, "name": "Ratio", "attributes": [{"name": "Share", "dataType": "float"}]},
    ],
}


def test_get_activity_types_extends_one_tenant_only():
    catalog = Catalog()
    assert catalog.load_activity_types(MUNCHKIN, GET_ACTIVITY_TYPES) == 3
    assert catalog.activity_type(MUNCHKIN, 400000).name == "Webinar Attended"
    assert catalog.activity_type(MUNCHKIN, 171).data_type("Share") == "float"
    assert catalog.activity_type(MUNCHKIN, 10).description == "Tenant's own wording"
    assert catalog.activity_type(OTHER, 400000) is None
    assert catalog.activity_type(OTHER, 10).description != "Tenant's own wording"
    assert catalog.activity_type_named("webinar attended", MUNCHKIN).id == 400000
    assert catalog.activity_type_named("webinar attended", OTHER) is None


@pytest.mark.parametrize(
    "document, message",
    [
        ({"result": []}, "at least one type"),
        ({"nope": 1}, "at least one type"),
        ({"result": [{"id": "ten", "name": "X"}]}, "result[0].id"),
        ({"result": [{"id": 5, "name": ""}]}, "result[0].name"),
        ({"result": [{"id": 5, "name": "X", "attributes": [{"dataType": "string"}]}]}, "result[0].attributes[0]"),
    ],
)
def test_bad_documents_are_refused_naming_the_entry(document, message):
    catalog = Catalog()
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("]", r"\]")):
        catalog.load_activity_types(MUNCHKIN, document)
    assert MUNCHKIN not in catalog.tenant_documents


def test_custom_types_need_ids_from_100000():
    catalog = Catalog()
    with pytest.raises(CatalogError, match=r"result\[0\]\.id: custom activity types need an id >= 100000, got 99"):
        catalog.load_activity_types(MUNCHKIN, {"result": [{"id": 99, "name": "Too Low"}]}, custom_only=True)


async def test_catalog_api_serves_and_extends_per_tenant_across_restarts(tmp_path):
    async with running_server(data_dir=tmp_path) as server, aiohttp.ClientSession(headers=None) as session:
        h = server.headers
        async with session.get(f"{server.url}/v1/catalog/activity", headers=h) as r:
            assert r.status == 200 and len((await r.json())["types"]) == 74
        async with session.get(f"{server.url}/v1/catalog/notification", headers=h) as r:
            assert {t["kind"] for t in (await r.json())["types"]} >= {"campaign_abort", "web_services"}
        async with session.get(f"{server.url}/v1/catalog/leads", headers=h) as r:
            assert r.status == 404
        async with session.get(f"{server.url}/v1/catalog/activity") as r:
            assert r.status == 401
        # a record of the tenant's own type is refused until its catalog is loaded
        status, body = await publish(session, server, "activity", [activity(1, type_id=400000)])
        assert status == 422 and "400000" in body["rejected"][0]["errors"][0]
        async with session.put(f"{server.url}/v1/catalog/activity/{MUNCHKIN}", json=GET_ACTIVITY_TYPES, headers=h) as r:
            assert r.status == 200 and (await r.json())["loaded"] == 3
        async with session.post(
            f"{server.url}/v1/catalog/activity/{MUNCHKIN}/custom",
            json={"result": [{"id": 12, "name": "Not custom"}]},
            headers=h,
        ) as r:
            assert r.status == 422 and r.content_type == "application/problem+json"
        status, body = await publish(session, server, "activity", [activity(1, type_id=400000)])
        assert (status, body["accepted"]) == (200, 1)
        status, body = await publish(session, server, "activity", [activity(2, type_id=400000, munchkinId=OTHER)])
        assert status == 422
    async with running_server(data_dir=tmp_path) as server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/v1/catalog/activity?munchkinId={MUNCHKIN}", headers=server.headers) as r:
            names = {t["name"] for t in (await r.json())["types"]}
        assert "Webinar Attended" in names
        status, body = await publish(session, server, "activity", [activity(3, type_id=400000)])
        assert (status, body["accepted"]) == (200, 1)
