"""A simulated marketing-automation platform: realistic ingest records for several tenants.

Traffic is a stream of *scenarios* (a web session, an email campaign, a lead changing, a user
approving an email, a notification…) starting at random moments of a simulated clock. A scenario
schedules its records at future moments (an email is delivered seconds after it is sent, opened
later, clicked later still) on one time-ordered queue, so records come out in the order the
platform would publish them and every timestamp advances with the clock.

Records are built when they leave the queue, against the state of that moment: a lead deleted or
merged away in the meantime produces nothing more. Everything is drawn from one
``random.Random(seed)``: the same seed gives the same records, byte for byte.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from leadstream.catalog import Catalog, NotificationKind
from leadstream.sim import values as v
from leadstream.tenants import MUNCHKIN_RE

Record = tuple[str, dict[str, Any]]  # (stream, ingest record)
Build = Callable[[float], Record | None]

DEFAULT_TENANTS = ("123-ABC-456", "234-BCD-567", "345-CDE-678")
DEFAULT_START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
LEADS_PER_TENANT = 400
MIN_LEADS = 50  # deletes and merges stop here, so every tenant keeps traffic
MAX_LEADS = 5_000  # past this a new lead pushes an old one out (memory stays flat on long runs)
MAX_CUSTOM_RECORDS = 300  # per custom object and tenant; past it, changes are updates and deletes
MEAN_RECORDS_PER_SCENARIO = 2.6  # measured over the mix below; paces the clock to `events_per_second`
# Follow-ups (an open 5–90 s after delivery…) wait in the queue: at a high rate, real delays would
# keep millions of them waiting. Above this rate delays shrink in proportion, which bounds the
# queue near PACED_RATE × the longest delay (~10,000 items, a few MB) whatever the rate.
PACED_RATE = 50.0

# activity type ids the scenarios build by hand; the others are drawn from the catalog
VISIT_WEBPAGE, FILL_OUT_FORM, CLICK_LINK = 1, 2, 3
SEND_EMAIL, EMAIL_DELIVERED, EMAIL_BOUNCED, UNSUBSCRIBE_EMAIL, OPEN_EMAIL, CLICK_EMAIL = 6, 7, 8, 9, 10, 11
NEW_LEAD, CHANGE_DATA_VALUE, CHANGE_SCORE, ADD_TO_LIST, EMAIL_BOUNCED_SOFT = 12, 13, 22, 24, 27
MERGE_LEADS, DELETE_LEAD = 32, 37
HAND_BUILT = {1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 22, 27, 32, 37}

# lead fields as Change Data Value names them, with the field ids of a typical instance
FIELD_IDS = {
    "Email Address": 48,
    "First Name": 31,
    "Last Name": 33,
    "Job Title": 36,
    "Company Name": 47,
    "Phone Number": 42,
    "City": 39,
    "Lead Status": 90,
    "Lead Score": 55,
    "Unsubscribed": 70,
}
CHANGE_SOURCES = ("Web form fillout", "Web service API", "Marketo Flow Action", "Lead Database", "Salesforce")


@dataclass(slots=True)
class Lead:
    id: int
    fields: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.fields['First Name']} {self.fields['Last Name']}"


@dataclass(slots=True)
class CustomRecord:
    api_name: str
    guid: str
    lead_id: int
    fields: dict[str, Any]
    updated_at: float = 0.0


def _car(rng: random.Random) -> dict[str, Any]:
    make, model = rng.choice((("Volvo", "XC40"), ("Toyota", "Corolla"), ("Tesla", "Model 3"), ("Fiat", "500e")))
    return {
        "vin": f"{rng.getrandbits(68):017X}"[:17],
        "make": make,
        "model": model,
        "year": rng.randint(2015, 2026),
        "color": rng.choice(("red", "blue", "white", "black", "green")),
    }


def _subscription(rng: random.Random) -> dict[str, Any]:
    return {
        "plan": rng.choice(("starter", "growth", "enterprise")),
        "seats": rng.randint(1, 250),
        "status": rng.choice(("trial", "active")),
        "monthlyPrice": round(rng.uniform(19, 4900), 2),
    }


CUSTOM_OBJECTS: dict[str, Callable[[random.Random], dict[str, Any]]] = {"car_c": _car, "subscription_c": _subscription}


class Tenant:
    """One platform instance: its leads, users and assets."""

    def __init__(self, munchkin_id: str, rng: random.Random, first_lead_id: int) -> None:
        self.munchkin_id = munchkin_id
        self.ims_org = f"{rng.getrandbits(96):024X}@AdobeOrg"
        self.leads: list[Lead] = []
        self._where: dict[int, int] = {}  # lead id -> index in self.leads (O(1) pick and remove)
        self._next_lead_id = first_lead_id
        for _ in range(LEADS_PER_TENANT):
            self.add(Lead(self.reserve_lead_id(), v.person(rng)))
        host = munchkin_id.lower().replace("-", "")
        self.users = [
            (rng.randint(100, 9_999), f"{name.lower()}@{host}.example") for name in rng.sample(v.FIRST_NAMES, 6)
        ]
        self.users += [(rng.randint(100, 9_999), f"{rng.getrandbits(32):08x}@{host}.mktorest.com") for _ in range(2)]
        self.mailings = [
            (rng.randint(1_000, 99_999), f"{program}.{email}")
            for program, email in (
                ("2026-11 Newsletter", "Newsletter Email"),
                ("Webinar - Data Streams", "Invitation"),
                ("Webinar - Data Streams", "Reminder"),
                ("Onboarding Nurture", "Welcome Email"),
                ("Product Update 3.2", "Announcement"),
                ("Black Friday", "Offer Email"),
            )
        ]
        self.campaigns = [rng.randint(1_000, 9_999) for _ in range(8)]
        self.programs = [rng.randint(1_000, 9_999) for _ in range(5)]
        self.pages = {path: rng.randint(1_000, 9_999) for path in v.PAGES}
        self.forms = [
            (rng.randint(1_000, 9_999), name)
            for name in ("Contact Us", "Webinar Registration", "Free Trial", "Newsletter Signup")
        ]
        self.lists = [
            (rng.randint(1_000, 9_999), name)
            for name in ("Webinar Attendees", "Trade Show 2026", "Newsletter", "Imported Leads")
        ]
        self.custom_records: dict[str, list[CustomRecord]] = {name: [] for name in CUSTOM_OBJECTS}
        self._component_ids: dict[str, list[int]] = {}

    def reserve_lead_id(self) -> int:
        self._next_lead_id += 1
        return self._next_lead_id

    def add(self, lead: Lead) -> None:
        self._where[lead.id] = len(self.leads)
        self.leads.append(lead)

    def remove(self, lead_id: int) -> None:
        index = self._where.pop(lead_id)
        last = self.leads.pop()
        if last.id != lead_id:
            self.leads[index] = last
            self._where[last.id] = index

    def get(self, lead_id: int) -> Lead | None:
        index = self._where.get(lead_id)
        return None if index is None else self.leads[index]

    def pick(self, rng: random.Random) -> Lead:
        return rng.choice(self.leads)

    def component_id(self, component: str, rng: random.Random) -> int:
        ids = self._component_ids.setdefault(component, [rng.randint(1_000, 999_999) for _ in range(6)])
        return rng.choice(ids)


@dataclass
class _Scenario:
    weight: float
    start: Callable[[Tenant, float], None]


class Platform:
    """Ingest records of a simulated platform, in publish order, deterministic with ``seed``.

    ``events_per_second`` paces the simulated clock (about that many records per simulated
    second), so that ``simulate`` can publish records dated near the wall clock.
    """

    def __init__(
        self,
        seed: int = 0,
        tenants: Sequence[str] = DEFAULT_TENANTS,
        catalog: Catalog | None = None,
        start: datetime | None = None,
        *,
        events_per_second: float = 50.0,
    ) -> None:
        if not tenants:
            raise ValueError("tenants: at least one Munchkin ID is needed")
        for munchkin_id in tenants:
            if not MUNCHKIN_RE.fullmatch(munchkin_id):
                raise ValueError(f"tenants: {munchkin_id!r} is not a Munchkin ID (123-ABC-456)")
        if events_per_second <= 0:
            raise ValueError(f"events_per_second: must be positive, got {events_per_second!r}")
        self.catalog = catalog or Catalog()
        self._rng = rng = random.Random(seed)
        self.clock = (start or DEFAULT_START).timestamp()
        self.tenants = [Tenant(m, rng, first_lead_id=(i + 1) * 1_000_000) for i, m in enumerate(tenants)]
        self._tenant_weights = [1 / (i + 1) for i in range(len(self.tenants))]  # some instances are busier
        self._queue: list[tuple[float, int, Build]] = []  # (moment, tie-breaker, build): a heap
        self._seq = itertools.count()
        self._next_start = self.clock
        self._mean_gap = MEAN_RECORDS_PER_SCENARIO / events_per_second
        self._compress = min(1.0, PACED_RATE / events_per_second)
        self._activity_id = rng.randrange(400_000_000, 500_000_000)
        self._other_types = {
            t.munchkin_id: sorted(i for i in self.catalog.tenant_types(t.munchkin_id) if i not in HAND_BUILT)
            for t in self.tenants
        }
        self._audit_components = sorted(self.catalog.audit_components)
        self._audit_actions = {c: sorted(a) for c, a in self.catalog.audit_components.items()}
        self._kinds = list(self.catalog.notification_kinds.values())
        self._scenarios = [
            _Scenario(28, self._web_session),
            _Scenario(3, self._email_campaign),
            _Scenario(14, self._lead_change),
            _Scenario(6, self._new_lead),
            _Scenario(1.5, self._delete_lead),
            _Scenario(1.5, self._merge_leads),
            _Scenario(5, self._score_change),
            _Scenario(6, self._other_activity),
            _Scenario(7, self._custom_object_change),
            _Scenario(8, self._audit),
            _Scenario(3, self._notification),
        ]
        self._scenario_weights = [s.weight for s in self._scenarios]

    # -- the queue ------------------------------------------------------------------------------
    def next_records(self, n: int) -> list[Record]:
        """The next ``n`` (stream, record) pairs, in publish order."""
        records: list[Record] = []
        queue = self._queue
        while len(records) < n:
            if not queue or self._next_start <= queue[0][0]:
                self._start_scenario()
                continue
            moment, _, build = heapq.heappop(queue)
            self.clock = moment
            record = build(moment)
            if record is not None:
                records.append(record)
        return records

    def _start_scenario(self) -> None:
        rng = self._rng
        moment = self.clock = self._next_start
        tenant = rng.choices(self.tenants, self._tenant_weights)[0]
        rng.choices(self._scenarios, self._scenario_weights)[0].start(tenant, moment)
        self._next_start = moment + rng.expovariate(1 / self._mean_gap)

    def _after(self, low: float, high: float) -> float:
        """A follow-up delay in simulated seconds, compressed above ``PACED_RATE`` (see there)."""
        return self._rng.uniform(low, high) * self._compress

    def _at(self, moment: float, build: Build) -> None:
        heapq.heappush(self._queue, (moment, next(self._seq), build))

    # -- activity records -----------------------------------------------------------------------
    def _activity(
        self,
        tenant: Tenant,
        lead_id: int,
        moment: float,
        type_id: int,
        *,
        primary: tuple[int | str | None, Any] = (None, None),
        campaign_id: int | None = None,
        given: dict[str, Any] | None = None,
        fill: bool = True,
    ) -> Record | None:
        """An activity record; attributes not ``given`` get values of their catalog data type
        (all of them with ``fill``, none without). None when the lead is gone."""
        if tenant.get(lead_id) is None:
            return None
        rng = self._rng
        activity = self.catalog.activity_type(tenant.munchkin_id, type_id)
        assert activity is not None, f"activity type {type_id} is not in the catalog"
        given = given or {}
        attributes = []
        for name, attribute in activity.attributes.items():
            if name in given:
                attributes.append({"name": name, "value": given[name]})
            elif fill:
                attributes.append({"name": name, "value": v.attribute_value(name, attribute.data_type, rng, moment)})
        self._activity_id += rng.randint(1, 4)  # ids are shared with activities not streamed
        record: dict[str, Any] = {
            "munchkinId": tenant.munchkin_id,
            "marketoGUID": v.guid(rng),
            "id": self._activity_id,
            "leadId": lead_id,
            "activityDate": v.rfc3339(moment),
            "activityTypeId": type_id,
        }
        if primary[0] is not None:
            record["primaryAttributeValueId"], record["primaryAttributeValue"] = primary
        if campaign_id is not None:
            record["campaignId"] = campaign_id
        record["attributes"] = attributes
        return "activity", record

    def _activity_at(self, moment: float, tenant: Tenant, lead_id: int, type_id: int, **options: Any) -> None:
        """Schedule an activity; it is built (ids, GUID, lead check) when its moment comes."""
        self._at(moment, lambda now: self._activity(tenant, lead_id, now, type_id, **options))

    def _web_session(self, tenant: Tenant, moment: float) -> None:
        rng = self._rng
        lead = tenant.pick(rng)
        browser = {"Client IP Address": v.ip(rng), "User Agent": rng.choice(v.USER_AGENTS), "Query Parameters": ""}
        referrer = rng.choice(v.REFERRERS)
        for _ in range(rng.randint(1, 4)):
            moment += self._after(2, 45)
            path = rng.choice(v.PAGES)
            page_id = tenant.pages[path]
            engine, query = rng.choice(v.SEARCH) if "google" in referrer or "duckduckgo" in referrer else ("", "")
            visit = {
                **browser,
                "Webpage URL": v.url(rng, path),
                "Referrer URL": referrer,
                "Search Engine": engine,
                "Search Query": query,
                "Personalized URL": False,
            }
            self._activity_at(
                moment, tenant, lead.id, VISIT_WEBPAGE, primary=(page_id, f"www.example.com{path}"), given=visit
            )
            referrer = v.url(rng, path)
            if rng.random() < 0.25:
                click = {**browser, "Referrer URL": referrer, "Webpage ID": page_id}
                self._activity_at(
                    moment + self._after(1, 20),
                    tenant,
                    lead.id,
                    CLICK_LINK,
                    primary=(rng.randint(1_000, 99_999), v.url(rng)),
                    given=click,
                )
        if rng.random() < 0.15:
            form_id, form = rng.choice(tenant.forms)
            fields = lead.fields
            submitted = {
                **browser,
                "Referrer URL": referrer,
                "Webpage ID": tenant.pages["/contact"],
                "Form Fields": f"Email={fields['Email Address']}&FirstName={fields['First Name']}"
                f"&LastName={fields['Last Name']}&Company={fields['Company Name']}",
            }
            self._activity_at(
                moment + self._after(10, 90),
                tenant,
                lead.id,
                FILL_OUT_FORM,
                primary=(form_id, f"{form} Form"),
                given=submitted,
            )

    def _email_campaign(self, tenant: Tenant, moment: float) -> None:
        """One send to a handful of leads: Send → Delivered → Open → Click, some bounce or unsubscribe."""
        rng = self._rng
        mailing = rng.choice(tenant.mailings)
        campaign_id = rng.choice(tenant.campaigns)
        common = {
            "Campaign Run ID": rng.randint(1_000, 99_999),
            "Choice Number": 0,
            "Has Predictive": False,
            "Step ID": rng.randint(1, 40),
            "Test Variant": 0,
        }

        def email(at: float, lead_id: int, type_id: int, extra: dict[str, Any] | None = None) -> None:
            known = self.catalog.activity_type(tenant.munchkin_id, type_id).attributes  # type: ignore[union-attr]
            given = {name: value for name, value in {**common, **(extra or {})}.items() if name in known}
            self._activity_at(
                at, tenant, lead_id, type_id, primary=mailing, campaign_id=campaign_id, given=given, fill=False
            )

        recipients = rng.sample(tenant.leads, min(len(tenant.leads), rng.randint(3, 20)))
        for lead in recipients:
            moment += self._after(0.05, 0.5)
            email(moment, lead.id, SEND_EMAIL)
            fate = rng.random()
            if fate < 0.06:
                hard = fate < 0.03
                bounce = {
                    "Email": lead.fields["Email Address"],
                    "Category": "1" if hard else "4",
                    "Subcategory": "1003" if hard else "2001",
                    "Details": "550 5.1.1 Recipient address rejected: User unknown"
                    if hard
                    else "452 4.2.2 Mailbox full, try again later",
                }
                kind = EMAIL_BOUNCED if hard else EMAIL_BOUNCED_SOFT
                email(moment + self._after(1, 10), lead.id, kind, bounce)
                continue
            delivered = moment + self._after(1, 20)
            email(delivered, lead.id, EMAIL_DELIVERED)
            if rng.random() >= 0.35:
                continue
            device, platform, mobile = rng.choice(v.DEVICES)
            reader = {
                "Device": device,
                "Platform": platform,
                "Is Mobile Device": mobile,
                "Is Bot Activity": False,
                "Bot Activity Pattern": "N/A",
                "User Agent": rng.choice(v.USER_AGENTS),
            }
            opened = delivered + self._after(5, 90)
            email(opened, lead.id, OPEN_EMAIL, reader)
            if rng.random() < 0.3:
                click = {
                    **reader,
                    "Link": v.url(rng),
                    "Link ID": str(rng.randint(1_000, 99_999)),
                    "Is Predictive": False,
                }
                email(opened + self._after(2, 60), lead.id, CLICK_EMAIL, click)
            if rng.random() < 0.05:
                leaving = {
                    "Client IP Address": v.ip(rng),
                    "User Agent": reader["User Agent"],
                    "Query Parameters": "",
                    "Referrer URL": "",
                    "Webform ID": rng.randint(1_000, 9_999),
                    "Webpage ID": rng.randint(1_000, 9_999),
                    "Form Fields": f"Email={lead.fields['Email Address']}&Unsubscribed=yes",
                }
                unsubscribed = opened + self._after(5, 60)
                email(unsubscribed, lead.id, UNSUBSCRIBE_EMAIL, leaving)
                self._at(unsubscribed + 0.5, self._field_change(tenant, lead.id, "Unsubscribed", "true", campaign_id))

    def _field_change(self, tenant: Tenant, lead_id: int, name: str, new: str, campaign_id: int) -> Build:
        """A Change Data Value made by a flow action, built when its moment comes."""

        def build(moment: float) -> Record | None:
            return self._change_field(tenant, lead_id, moment, name, new, "Marketo Flow Action", campaign_id)

        return build

    def _lead_change(self, tenant: Tenant, moment: float) -> None:
        rng = self._rng
        lead = tenant.pick(rng)
        name = rng.choice(
            ("Email Address", "Job Title", "Lead Score", "Phone Number", "Company Name", "City", "Lead Status")
        )
        self._at(
            moment,
            lambda now: self._change_field(
                tenant, lead.id, now, name, None, rng.choice(CHANGE_SOURCES), rng.choice(tenant.campaigns)
            ),
        )

    def _change_field(
        self,
        tenant: Tenant,
        lead_id: int,
        moment: float,
        name: str,
        new: str | None,
        source: str,
        campaign_id: int,
    ) -> Record | None:
        """Change Data Value (13): the field name is the primary attribute value."""
        lead = tenant.get(lead_id)
        if lead is None:
            return None
        rng = self._rng
        old = lead.fields[name]
        if new is None:
            new = self._new_value(name, lead)
        if new == old:
            return None
        lead.fields[name] = new
        given = {
            "New Value": new,
            "Old Value": old,
            "Source": source,
            "Reason": {
                "Web form fillout": "Form fill",
                "Web service API": "API call",
                "Marketo Flow Action": "Changed by Smart Campaign",
                "Lead Database": "Manual edit",
                "Salesforce": "Synced from Salesforce",
            }[source],
        }
        if source == "Web service API":
            given["API Method Name"] = "syncLead"
            given["Request Id"] = f"{rng.getrandbits(16):x}#{rng.getrandbits(40):x}"
        if source == "Lead Database":
            given["Modifying User"] = rng.choice(tenant.users)[1]
        return self._activity(
            tenant,
            lead_id,
            moment,
            CHANGE_DATA_VALUE,
            primary=(FIELD_IDS[name], name),
            campaign_id=campaign_id if source == "Marketo Flow Action" else None,
            given=given,
            fill=False,
        )

    def _new_value(self, name: str, lead: Lead) -> str:
        rng = self._rng
        match name:
            case "Email Address":
                return v.email(rng, lead.fields["First Name"], lead.fields["Last Name"], rng.choice(v.COMPANIES))
            case "Job Title":
                return rng.choice(v.JOB_TITLES)
            case "Lead Score":
                return str(max(0, int(lead.fields["Lead Score"]) + rng.choice((-10, -5, 5, 10, 15, 25))))
            case "Phone Number":
                return v.phone(rng)
            case "Company Name":
                return rng.choice(v.COMPANIES)
            case "City":
                return rng.choice(v.CITIES)
            case "Lead Status":
                statuses = v.LEAD_STATUSES
                return statuses[min(statuses.index(lead.fields["Lead Status"]) + 1, len(statuses) - 1)]
        raise KeyError(name)

    def _new_lead(self, tenant: Tenant, moment: float) -> None:
        rng = self._rng
        lead = Lead(tenant.reserve_lead_id(), v.person(rng))
        source = rng.choice(("Web form fillout", "List import", "Web service API", "New lead"))
        given: dict[str, Any] = {"Created Date": v.rfc3339(moment)[:10], "Source Type": source}
        if source == "Web form fillout":
            given |= {"Form Name": f"{rng.choice(tenant.forms)[1]} Form", "Lead Source": "Website"}
        elif source == "List import":
            given |= {
                "List Name": rng.choice(tenant.lists)[1],
                "Lead Source": "Trade Show",
                "Modifying User": rng.choice(tenant.users)[1],
            }
        elif source == "Web service API":
            given |= {
                "API Method Name": "syncLead",
                "Lead Source": "Partner",
                "Request Id": f"{rng.getrandbits(16):x}#{rng.getrandbits(40):x}",
            }
        else:
            given |= {"SFDC Type": "Lead", "Lead Source": "Salesforce"}

        def created(now: float) -> Record | None:
            tenant.add(lead)
            return self._activity(tenant, lead.id, now, NEW_LEAD, given=given, fill=False)

        self._at(moment, created)
        if len(tenant.leads) >= MAX_LEADS:
            self._delete_lead(tenant, moment + 0.001)
        if rng.random() < 0.5:
            listed = rng.choice(tenant.lists)
            self._activity_at(
                moment + self._after(1, 30), tenant, lead.id, ADD_TO_LIST, primary=listed, given={"Source": source}
            )

    def _delete_lead(self, tenant: Tenant, moment: float) -> None:
        lead_id = tenant.pick(self._rng).id

        def deleted(now: float) -> Record | None:
            lead = tenant.get(lead_id)
            if lead is None or len(tenant.leads) <= MIN_LEADS:
                return None
            record = self._activity(tenant, lead_id, now, DELETE_LEAD, primary=(lead_id, lead.name))
            tenant.remove(lead_id)
            return record

        self._at(moment, deleted)

    def _merge_leads(self, tenant: Tenant, moment: float) -> None:
        rng = self._rng
        winner_id, loser_id = (lead.id for lead in rng.sample(tenant.leads, 2))
        source = rng.choice(("Lead Database", "Web service API"))

        def merged(now: float) -> Record | None:
            winner = tenant.get(winner_id)
            if winner is None or tenant.get(loser_id) is None or len(tenant.leads) <= MIN_LEADS:
                return None
            given: dict[str, Any] = {
                "Merge IDs": [loser_id],
                "Master Updated": rng.random() < 0.5,
                "Merged in Sales": False,
                "Merge Source": source,
            }
            if source == "Web service API":
                given |= {
                    "API Method Name": "mergeLead",
                    "Request Id": f"{rng.getrandbits(16):x}#{rng.getrandbits(40):x}",
                }
            else:
                given["Modifying User"] = rng.choice(tenant.users)[1]
            tenant.remove(loser_id)
            return self._activity(
                tenant, winner_id, now, MERGE_LEADS, primary=(winner_id, winner.name), given=given, fill=False
            )

        self._at(moment, merged)

    def _score_change(self, tenant: Tenant, moment: float) -> None:
        rng = self._rng
        lead_id = tenant.pick(rng).id
        delta = rng.choice((-10, -5, 5, 10, 15, 25))
        reason = rng.choice(("Visited pricing page", "Opened 3 emails", "Attended webinar", "Inactive for 30 days"))
        campaign_id = rng.choice(tenant.campaigns)

        def scored(now: float) -> Record | None:
            lead = tenant.get(lead_id)
            if lead is None:
                return None
            old = int(lead.fields["Lead Score"])
            new = max(0, old + delta)
            lead.fields["Lead Score"] = str(new)
            given = {"Change Value": f"{delta:+d}", "New Value": new, "Old Value": old, "Reason": reason}
            return self._activity(
                tenant,
                lead_id,
                now,
                CHANGE_SCORE,
                primary=(FIELD_IDS["Lead Score"], "Lead Score"),
                campaign_id=campaign_id,
                given=given,
                fill=False,
            )

        self._at(moment, scored)

    def _other_activity(self, tenant: Tenant, moment: float) -> None:
        """Any other catalog type (the tenant's own included), attributes filled by data type."""
        rng = self._rng
        lead_id = tenant.pick(rng).id
        type_id = rng.choice(self._other_types[tenant.munchkin_id])
        activity = self.catalog.activity_type(tenant.munchkin_id, type_id)
        assert activity is not None
        primary: tuple[int | str | None, Any] = (None, None)
        if activity.primary_attribute is not None:
            label = activity.primary_attribute.name.removesuffix(" ID").removesuffix(" Name")
            primary = (
                rng.randint(1_000, 99_999) if activity.primary_attribute.data_type == "integer" else v.guid(rng)[:8],
                f"{rng.choice(v.WORDS).title()} {label}",
            )
        campaign_id = rng.choice(tenant.campaigns) if rng.random() < 0.5 else None
        self._activity_at(moment, tenant, lead_id, type_id, primary=primary, campaign_id=campaign_id)

    # -- custom objects, audit, notifications ---------------------------------------------------
    def _custom_object_change(self, tenant: Tenant, moment: float) -> None:
        self._at(moment, partial(self._custom_object, tenant))

    def _custom_object(self, tenant: Tenant, moment: float) -> Record:
        rng = self._rng
        api_name = rng.choice(sorted(CUSTOM_OBJECTS))
        pool = tenant.custom_records[api_name]
        draw = rng.random()
        if len(pool) < 3 or (draw < 0.35 and len(pool) < MAX_CUSTOM_RECORDS):
            record = CustomRecord(api_name, v.guid(rng), tenant.pick(rng).id, CUSTOM_OBJECTS[api_name](rng))
            pool.append(record)
            action = "create"
        elif draw < 0.85:
            record = rng.choice(pool)
            name, value = rng.choice(sorted(CUSTOM_OBJECTS[api_name](rng).items()))
            record.fields = {**record.fields, name: value}
            action = "update"
        else:
            record = pool.pop(rng.randrange(len(pool)))
            action = "delete"
        # each change is keyed by its updatedAt: two changes of one record never share a millisecond
        record.updated_at = max(moment, record.updated_at + 0.001)
        return "activity", {
            "kind": "customObject",
            "munchkinId": tenant.munchkin_id,
            "apiName": api_name,
            "marketoGUID": record.guid,
            "leadId": record.lead_id,
            "action": action,
            "updatedAt": v.rfc3339(record.updated_at, ms=True),
            "fields": record.fields,
        }

    def _audit(self, tenant: Tenant, moment: float) -> None:
        self._at(moment, partial(self._audit_event, tenant))

    def _audit_event(self, tenant: Tenant, moment: float) -> Record:
        rng = self._rng
        user, user_email = rng.choice(tenant.users)
        if "Login" in self._audit_actions and rng.random() < 0.25:
            component = "Login"
            action = "login failure" if rng.random() < 0.15 else "login success"
            component_id: int = user
        else:
            component = rng.choice(self._audit_components)
            action = rng.choice(self._audit_actions[component])
            component_id = tenant.component_id(component, rng)
        return "audit", {
            "munchkinId": tenant.munchkin_id,
            "id": v.guid(rng),
            "time": v.rfc3339(moment, ms=True),
            "componentType": component,
            "componentId": component_id,
            "eventAction": action,
            "user": user,
            "userId": user_email,
            "imsOrgId": tenant.ims_org,
        }

    def _notification(self, tenant: Tenant, moment: float) -> None:
        self._at(moment, partial(self._notification_event, tenant))

    def _notification_event(self, tenant: Tenant, moment: float) -> Record:
        rng = self._rng
        kind = rng.choice(self._kinds)
        record: dict[str, Any] = {
            "munchkinId": tenant.munchkin_id,
            "id": v.guid(rng),
            "time": v.rfc3339(moment, ms=True),
            "imsOrgId": tenant.ims_org,
            "componentType": kind.kind,
        }
        if kind.sub_types:
            record["subType"] = rng.choice(kind.sub_types)
        record["eventAction"] = self._event_action(kind, tenant)
        return "notification", record

    def _event_action(self, kind: NotificationKind, tenant: Tenant) -> dict[str, Any]:
        rng = self._rng
        match kind.kind:
            case "campaign_abort":
                return {"campaignId": rng.choice(tenant.campaigns), "userId": rng.choice(tenant.users)[1]}
            case "campaign_failure":
                return {
                    "campaignId": rng.choice(tenant.campaigns),
                    "reason": rng.choice(
                        (
                            "Email 'Offer Email' is not approved",
                            "Smart list references a deleted list",
                            "Webhook 'CRM sync' returned 500",
                        )
                    ),
                }
            case "program_exhausted":
                return {"programId": rng.choice(tenant.programs), "exhaustedCount": rng.randint(1, 500)}
            case "salesforce_sync_failure":
                code, message = rng.choice(
                    (
                        ("INVALID_EMAIL_ADDRESS", "invalid email address"),
                        ("REQUIRED_FIELD_MISSING", "Required fields are missing: [Company]"),
                        ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"),
                    )
                )
                return {"errorCode": code, "message": message, "leadId": tenant.pick(rng).id}
            case "test_group":
                return {
                    "programId": rng.choice(tenant.programs),
                    "winner": rng.choice(("Variant A", "Variant B", "Control")),
                }
            case "web_services":
                services = ("Get Leads", "Sync Leads", "Get Lead Activities", "Bulk Extract", "Get Lead Changes")
                return {
                    "dailyQuota": 50_000,
                    "percent": rng.choice((80, 90, 100)),
                    "serviceNames": sorted(rng.sample(services, rng.randint(1, 3))),
                }
        # a kind added to the catalog later: values from its declared field types
        generic: dict[str, Callable[[], Any]] = {
            "number": lambda: rng.randint(1, 10_000),
            "boolean": lambda: rng.random() < 0.5,
            "array<string>": lambda: [rng.choice(v.WORDS)],
        }
        return {name: generic.get(type_, lambda: rng.choice(v.WORDS))() for name, type_ in kind.event_action.items()}
