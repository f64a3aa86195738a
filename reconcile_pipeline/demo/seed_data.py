"""Realistic demo leads for the emulator's Leads table (deterministic for a given seed)."""

import datetime as dt
import random

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Frances",
    "John",
    "Katherine",
    "Tim",
    "Sophie",
    "Guido",
    "Hedy",
    "Dennis",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Torvalds",
    "Allen",
    "Backus",
    "Johnson",
    "Berners-Lee",
    "Wilson",
    "Lamarr",
]
COMPANIES = [
    "Acme Roofing",
    "Blue Ridge Dental",
    "Cobalt Logistics",
    "Delta HVAC",
    "Evergreen Realty",
    "Fjord Fitness",
    "Granite Legal",
    "Harbor Insurance",
    "Iris Solar",
    "Juniper Clinics",
    "Keystone Auto",
    "Lumen Labs",
]
TITLES = ["Owner", "Office Manager", "CEO", "Operations Lead", "Marketing Director", "Founder"]
STATUSES = ["New", "Contacted", "Engaged", "Qualified", "Unqualified", "Customer"]
SOURCES = ["Website Form", "Referral", "Cold Outreach", "Event", "Partner", "Ads"]
CAMPAIGNS = [
    ("cmp-spring", "Spring Promo"),
    ("cmp-reengage", "Re-engagement"),
    ("cmp-webinar", "Webinar Follow-up"),
]


def lead_fields(rng: random.Random, n: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    campaign_id, campaign_name = rng.choice(CAMPAIGNS)
    sent = rng.randint(0, 6)
    fields = {
        "Email": f"{first}.{last}.{n}@example.com".lower(),
        "First Name": first,
        "Last Name": last,
        "Phone": f"+1555{n:07d}",
        "Company": rng.choice(COMPANIES),
        "Title": rng.choice(TITLES),
        "ICP Score": rng.randint(10, 99),
        "Status": rng.choice(STATUSES),
        "Processing Status": "Active",
        "Campaign ID": campaign_id,
        "Campaign Name": campaign_name,
        "SMS Sequence Position": sent,
        "SMS Sent Count": sent,
        "Lead Source": rng.choice(SOURCES),
        "Form ID": f"form-{rng.randint(100, 999)}",
        "Booked": rng.random() < 0.1,
        "SMS Stop": rng.random() < 0.03,
        "Is Active": True,
        "Client ID": "client-demo",
    }
    if rng.random() < 0.3:
        fields["Notes"] = "Imported from the spring web form"
    return fields


CHANNELS = {"cmp-spring": "SMS", "cmp-reengage": "Email", "cmp-webinar": "Email"}


def demo_campaigns() -> list[tuple[str, dict]]:
    """(campaign key, Airtable fields) of the demo's campaigns (the Campaigns table)."""
    return [
        (key, {"Name": name, "Channel": CHANNELS[key], "Campaign Status": "Active"})
        for key, name in CAMPAIGNS
    ]


def demo_leads(count: int, now: dt.datetime, seed: int = 7) -> tuple[list[dict], list, list]:
    """`count` leads with created/modified times: most spread over the last 24 hours, a tenth
    within the last half hour (so the current windows have work too)."""
    rng = random.Random(seed)
    leads, created, modified = [], [], []
    for n in range(count):
        leads.append(lead_fields(rng, n))
        if n % 10 == 0:
            changed = now - dt.timedelta(minutes=rng.uniform(1, 30))
        else:
            changed = now - dt.timedelta(hours=rng.uniform(0.5, 23.5))
        created.append(changed - dt.timedelta(days=rng.uniform(1, 30)))
        modified.append(changed)
    return leads, created, modified
