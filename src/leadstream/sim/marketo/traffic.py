"""Activities of one simulated instance: a lead population and what happens to it, by seed.

Every record is built against the population of its moment, so lead ids stay consistent: a lead
created during the simulation has its New Lead (12) before anything else, a Delete Lead (37) or
the losing side of a Merge Leads (32) removes it and nothing follows for it, Change Data Value (13)
changes a field the lead really has (New Value / Old Value / Reason / Source, the field name as
``primaryAttributeValue``). The initial population (the leads an instance already has) was created
before the log begins, as on a real instance whose history is older than the window read.

Deletes and merges stop at ``MIN_LEADS`` leads; there a New Lead is built instead, so every batch
keeps its size. Attributes are filled by catalog data type with the simulated platform's values;
empty values are omitted, as Marketo omits them.

``Schedule`` dates the traffic: the k-th traffic activity is dated ``start + k / rate``, exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from leadstream.catalog import ActivityType
from leadstream.sim import values as v
from leadstream.sim.platform import (
    CHANGE_DATA_VALUE,
    CHANGE_SCORE,
    CHANGE_SOURCES,
    DELETE_LEAD,
    FIELD_IDS,
    LEADS_PER_TENANT,
    MERGE_LEADS,
    MIN_LEADS,
    NEW_LEAD,
    Lead,
    Tenant,
)

# How often each type happens in traffic, relative to the others (types not listed: OTHER_WEIGHT).
TRAFFIC_WEIGHTS = {
    1: 20.0,
    10: 10.0,
    7: 10.0,
    6: 10.0,
    3: 4.0,
    11: 4.0,
    13: 8.0,
    12: 3.0,
    2: 2.0,
    22: 3.0,
    24: 2.0,
    8: 0.5,
    27: 0.5,
    9: 0.5,
    DELETE_LEAD: 1.0,
    MERGE_LEADS: 0.5,
}
OTHER_WEIGHT = 0.5
EMAIL_TYPES = frozenset({6, 7, 8, 9, 10, 11, 27})
LIST_TYPES = frozenset({24, 25})
CHANGED_FIELDS = ("Email Address", "Job Title", "Phone Number", "Company Name", "City", "Lead Score", "Lead Status")
REASONS = {
    "Web form fillout": "Form fill",
    "Web service API": "API call",
    "Marketo Flow Action": "Changed by Smart Campaign",
    "Lead Database": "Manual edit",
    "Salesforce": "Synced from Salesforce",
}
HAND_BUILT = frozenset({NEW_LEAD, CHANGE_DATA_VALUE, CHANGE_SCORE, MERGE_LEADS})  # only the attributes given them


class Schedule:
    """Traffic at ``rate`` activities per second from ``start``: how many are due by a moment, and when."""

    def __init__(self, start: float, rate: float) -> None:
        if rate < 0:
            raise ValueError(f"rate: activities per second must be 0 or more, got {rate!r}")
        self.start, self.rate = start, rate
        self.made = 0

    def due(self, now: float) -> int:
        if self.rate == 0 or now < self.start:
            return 0
        return max(0, math.floor((now - self.start) * self.rate) - self.made)

    def next_moment(self) -> float:
        self.made += 1
        return self.start + self.made / self.rate


class ActivityFactory:
    """Builds activity records of the instance's types against its lead population, from one ``rng``."""

    def __init__(
        self,
        munchkin_id: str,
        types: Mapping[int, ActivityType],
        rng: random.Random,
        *,
        leads: int = LEADS_PER_TENANT,
    ) -> None:
        if leads < MIN_LEADS:
            raise ValueError(f"leads: the population needs at least {MIN_LEADS} leads, got {leads}")
        self.types = types
        self._rng = rng
        self.tenant = Tenant(munchkin_id, rng, first_lead_id=1_000)
        while len(self.tenant.leads) < leads:
            self.tenant.add(Lead(self.tenant.reserve_lead_id(), v.person(rng)))
        while len(self.tenant.leads) > leads:
            self.tenant.remove(self.tenant.leads[-1].id)

    def traffic_types(self, chosen: Sequence[int] | None) -> tuple[list[int], list[float]]:
        """The types traffic draws from (all the instance's by default) and their weights."""
        type_ids = sorted(self.types) if chosen is None else list(chosen)
        for type_id in type_ids:
            if type_id not in self.types:
                raise ValueError(f"activity type {type_id} is not a type of this instance")
        return type_ids, [TRAFFIC_WEIGHTS.get(t, OTHER_WEIGHT) for t in type_ids]

    def build(self, type_id: int, moment: float, activity_id: int) -> dict[str, Any]:
        """One activity of ``type_id``; a New Lead instead when a delete or merge would take the population
        below MIN_LEADS."""
        rng, tenant = self._rng, self.tenant
        if type_id in (DELETE_LEAD, MERGE_LEADS) and len(tenant.leads) <= MIN_LEADS:
            type_id = NEW_LEAD
        activity = self.types[type_id]
        primary: tuple[int | str, Any] | None = None
        given: dict[str, Any] = {}
        campaign_id = rng.choice(tenant.campaigns) if rng.random() < 0.5 else None
        if type_id == NEW_LEAD:
            lead = Lead(tenant.reserve_lead_id(), v.person(rng))
            tenant.add(lead)
            given = {
                "Created Date": v.rfc3339(moment)[:10],
                "Source Type": rng.choice(("Web form fillout", "List import", "New lead")),
                "Lead Source": rng.choice(("Website", "Trade Show", "Partner", "Salesforce")),
            }
            campaign_id = None
        else:
            lead = tenant.pick(rng)
        if type_id == CHANGE_DATA_VALUE:
            primary, given, campaign_id = self._change_data_value(lead)
        elif type_id == CHANGE_SCORE:
            old = int(lead.fields["Lead Score"])
            delta = rng.choice((-10, -5, 5, 10, 15, 25))
            lead.fields["Lead Score"] = str(max(0, old + delta))
            primary = (FIELD_IDS["Lead Score"], "Lead Score")
            given = {
                "Change Value": f"{delta:+d}",
                "New Value": int(lead.fields["Lead Score"]),
                "Old Value": old,
                "Reason": rng.choice(("Visited pricing page", "Opened 3 emails", "Attended webinar")),
            }
        elif type_id == DELETE_LEAD:
            primary, campaign_id = (lead.id, lead.name), None
            tenant.remove(lead.id)
        elif type_id == MERGE_LEADS:
            loser = self._other_lead(lead)
            tenant.remove(loser.id)
            primary = (lead.id, lead.name)
            given = {
                "Merge IDs": [loser.id],
                "Master Updated": rng.random() < 0.5,
                "Merged in Sales": False,
                "Merge Source": "Lead Database",
                "Modifying User": rng.choice(tenant.users)[1],
            }
        elif type_id == 1:
            path = rng.choice(v.PAGES)
            primary = (tenant.pages[path], f"www.example.com{path}")
            given = {"Webpage URL": v.url(rng, path)}
        elif type_id == 2:
            primary = rng.choice(tenant.forms)
            primary = (primary[0], f"{primary[1]} Form")
        elif type_id in EMAIL_TYPES:
            primary, campaign_id = rng.choice(tenant.mailings), rng.choice(tenant.campaigns)
        elif type_id in LIST_TYPES:
            primary = rng.choice(tenant.lists)
        elif activity.primary_attribute is not None:
            label = activity.primary_attribute.name.removesuffix(" ID").removesuffix(" Name")
            primary = (rng.randint(1_000, 99_999), f"{rng.choice(v.WORDS).title()} {label}")
        return self._record(activity, lead.id, moment, activity_id, primary, campaign_id, given)

    def _other_lead(self, lead: Lead) -> Lead:
        while True:  # the population has MIN_LEADS or more: a draw repeats `lead` rarely
            other = self.tenant.pick(self._rng)
            if other.id != lead.id:
                return other

    def _change_data_value(self, lead: Lead) -> tuple[tuple[int, str], dict[str, Any], int | None]:
        rng = self._rng
        name = rng.choice(CHANGED_FIELDS)
        old = lead.fields[name]
        new = self._changed(name, old)
        lead.fields[name] = new
        source = rng.choice(CHANGE_SOURCES)
        given: dict[str, Any] = {"New Value": new, "Old Value": old, "Reason": REASONS[source], "Source": source}
        if source == "Web service API":
            given |= {"API Method Name": "syncLead", "Request Id": f"{rng.getrandbits(16):x}#{rng.getrandbits(40):x}"}
        elif source == "Lead Database":
            given["Modifying User"] = rng.choice(self.tenant.users)[1]
        campaign_id = rng.choice(self.tenant.campaigns) if source == "Marketo Flow Action" else None
        return (FIELD_IDS[name], name), given, campaign_id

    def _changed(self, name: str, old: str) -> str:
        """A new value for the field ``name``, never equal to ``old``."""
        if name == "Lead Score":
            return str(int(old) + self._rng.choice((5, 10, 15, 25)))
        if name == "Lead Status":
            statuses = v.LEAD_STATUSES
            return statuses[(statuses.index(old) + 1) % len(statuses)] if old in statuses else statuses[0]
        for _ in range(50):  # every other field has 10+ values: one draw in ten repeats the old one
            new = v.person(self._rng)[name]
            if new != old:
                return new
        return f"{old} (changed)"

    def _record(
        self,
        activity: ActivityType,
        lead_id: int,
        moment: float,
        activity_id: int,
        primary: tuple[int | str, Any] | None,
        campaign_id: int | None,
        given: dict[str, Any],
    ) -> dict[str, Any]:
        rng = self._rng
        attributes = []
        for name, attribute in activity.attributes.items():
            if name in given:
                value = given[name]
            else:
                value = None if activity.id in HAND_BUILT else v.attribute_value(name, attribute.data_type, rng, moment)
            if value not in (None, "", []):
                attributes.append({"name": name, "value": value})
        record: dict[str, Any] = {
            "id": activity_id,
            "marketoGUID": v.guid(rng),
            "leadId": lead_id,
            "activityDate": v.rfc3339(moment),
            "activityTypeId": activity.id,
        }
        if primary is not None:
            record["primaryAttributeValueId"], record["primaryAttributeValue"] = primary
        if campaign_id is not None:
            record["campaignId"] = campaign_id
        record["attributes"] = attributes
        return record
