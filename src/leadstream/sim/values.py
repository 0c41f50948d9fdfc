"""Plausible values for the simulated platform: people, web traffic, and attribute values by type.

Every function takes the ``random.Random`` to draw from, so the whole simulation follows its seed.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

FIRST_NAMES = (
    "Ada",
    "Ben",
    "Chloé",
    "Dmitri",
    "Elena",
    "Farah",
    "Gus",
    "Hana",
    "Ivan",
    "Jia",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Vera",
    "Wei",
    "Yusuf",
    "Zoe",
)
LAST_NAMES = (
    "Adler",
    "Brooks",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Hughes",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Patel",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Varga",
)
COMPANIES = (
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Logistics",
    "Wayne Foods",
    "Hooli",
    "Vandelay Industries",
    "Soylent Labs",
    "Tyrell Systems",
    "Cyberdyne Retail",
    "Wonka Confections",
)
JOB_TITLES = (
    "Marketing Manager",
    "VP Marketing",
    "Demand Generation Lead",
    "CMO",
    "Marketing Operations Analyst",
    "Sales Director",
    "Account Executive",
    "Product Marketing Manager",
    "Growth Engineer",
    "CTO",
)
CITIES = ("Berlin", "Lisbon", "Austin", "Toronto", "Singapore", "Sydney", "Dublin", "São Paulo", "Osaka", "Nairobi")
LEAD_STATUSES = ("New", "Working", "Nurturing", "Marketing Qualified", "Sales Accepted", "Disqualified")

USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",  # noqa: E501
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
)
DEVICES = (
    ("iPhone", "iOS", True),
    ("Android", "Android", True),
    ("Desktop", "Windows", False),
    ("Mac", "Mac OS", False),
)
PAGES = (
    "/",
    "/pricing",
    "/product/data-streams",
    "/blog/real-time-marketing",
    "/customers",
    "/webinars",
    "/docs/getting-started",
    "/contact",
    "/about",
    "/careers",
)
REFERRERS = (
    "https://www.google.com/",
    "https://www.linkedin.com/",
    "https://news.ycombinator.com/",
    "",
    "https://duckduckgo.com/",
)
SEARCH = (("Google", "marketing data streams"), ("Bing", "real time lead activity"), ("DuckDuckGo", "webhook marketo"))
SOCIAL_NETWORKS = ("LinkedIn", "Facebook", "Twitter", "Xing")
WORDS = ("alpha", "beacon", "cobalt", "delta", "ember", "falcon", "granite", "harbor", "iris", "juniper", "kestrel")


def guid(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (uuid4() would ignore the seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def rfc3339(moment: float, *, ms: bool = False) -> str:
    when = datetime.fromtimestamp(moment, UTC)
    if ms:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def ip(rng: random.Random) -> str:
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def person(rng: random.Random) -> dict[str, str]:
    """A lead's fields, as Change Data Value names them."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    company = rng.choice(COMPANIES)
    return {
        "First Name": first,
        "Last Name": last,
        "Email Address": email(rng, first, last, company),
        "Job Title": rng.choice(JOB_TITLES),
        "Company Name": company,
        "Phone Number": phone(rng),
        "City": rng.choice(CITIES),
        "Lead Status": "New",
        "Lead Score": str(rng.randint(0, 40)),
        "Unsubscribed": "false",
    }


def email(rng: random.Random, first: str, last: str, company: str) -> str:
    local = f"{first}.{last}".lower().encode("ascii", "ignore").decode()
    host = company.lower().replace(" ", "")
    return f"{local}{rng.randint(1, 99)}@{host}.example"  # .example: reserved, never a real mailbox


def phone(rng: random.Random) -> str:
    return f"+1 {rng.randint(200, 989)}-555-{rng.randint(0, 9999):04d}"


def url(rng: random.Random, path: str | None = None) -> str:
    return f"https://www.example.com{path or rng.choice(PAGES)}"


def _by_name(name: str, rng: random.Random) -> Any:
    """Values for attribute names that mean something; None when the name is not known here."""
    match name:
        case "Client IP Address":
            return ip(rng)
        case "User Agent":
            return rng.choice(USER_AGENTS)
        case "Referrer URL":
            return rng.choice(REFERRERS)
        case "Webpage URL" | "Link":
            return url(rng)
        case "Query Parameters":
            return rng.choice(("", "utm_source=newsletter&utm_medium=email", "utm_campaign=q4-webinar"))
        case "Search Engine":
            return rng.choice(SEARCH)[0]
        case "Search Query":
            return rng.choice(SEARCH)[1]
        case "Device":
            return rng.choice(DEVICES)[0]
        case "Platform":
            return rng.choice(DEVICES)[1]
        case "Social Network":
            return rng.choice(SOCIAL_NETWORKS)
        case "Reason":
            return rng.choice(("Changed by Smart Campaign", "Web form fillout", "API call", "Scheduled batch"))
        case "Source" | "Lead Source":
            return rng.choice(("Website", "Web service API", "Marketo Flow Action", "Lead Database", "Salesforce"))
        case "Role":
            return rng.choice(("Decision Maker", "Influencer", "Evaluator"))
        case "Modifying User" | "Sent by" | "Received by" | "Send To Owner":
            return f"{rng.choice(FIRST_NAMES).lower()}@example.com"
        case "API Method Name":
            return rng.choice(("syncLead", "mergeLead", "importLead", "associateLead"))
        case "Request Id":
            return f"{rng.getrandbits(16):x}#{rng.getrandbits(40):x}"
        case "Email":
            return f"{rng.choice(FIRST_NAMES).lower()}.{rng.choice(LAST_NAMES).lower()}@example.org"
    return None


def attribute_value(name: str, data_type: str, rng: random.Random, moment: float) -> Any:
    """A value of ``data_type`` (as the catalog names it), plausible for the attribute ``name``."""
    match data_type:
        case "integer" | "reference":
            return rng.randint(1, 99_999)
        case "float" | "currency":
            return round(rng.uniform(1, 10_000), 2)
        case "boolean":
            return rng.random() < 0.5
        case "date":
            return rfc3339(moment)[:10]
        case "datetime":
            return rfc3339(moment)
        case "array":
            return [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
        case "email":
            return _by_name("Email", rng)
        case "url":
            return url(rng)
        case "phone":
            return phone(rng)
        case "text":
            return f"{rng.choice(WORDS)} {rng.choice(WORDS)}: {rng.choice(WORDS)}"
    known = _by_name(name, rng)
    return known if isinstance(known, str) else f"{name} {rng.choice(WORDS)}"
