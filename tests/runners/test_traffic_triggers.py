"""The generated traffic exercises the triggers of DESIGN.md section 10 (runners/journeys.py)."""

import collections

from runners.journeys import SIGN_UP
from runners.traffic import Traffic, TrafficConfig, build_catalog
from transforms.model import EMAIL_CLICK, PAGE_VIEW, PRODUCT_VIEW, PURCHASE, BehaviourEvent


def events(n: int = 6000) -> list[BehaviourEvent]:
    return [i for i in Traffic(TrafficConfig(events=n, customers=600, seed=5))
            if isinstance(i, BehaviourEvent)]


def test_sign_ups_clicks_without_visits_and_co_purchases_are_there():
    evs = events()
    assert sum(1 for e in evs if e.event_type == PAGE_VIEW and e.properties == SIGN_UP) > 5
    by_customer = collections.defaultdict(list)
    for e in evs:
        by_customer[e.customer_id].append(e)
    unanswered = 0
    for cust in by_customer.values():
        for i, e in enumerate(cust):
            if e.event_type == EMAIL_CLICK and not any(
                    x.event_type == PRODUCT_VIEW for x in cust[i + 1:i + 2]):
                unanswered += 1
    assert unanswered > 5
    orders = collections.defaultdict(set)
    for e in evs:
        if e.event_type == PURCHASE and e.order_id and e.product:
            orders[e.order_id].add(e.product.product_id)
    catalog = [p.product_id for p in build_catalog()]
    paired = [o for o in orders.values()
              if any(catalog[(catalog.index(p) + 40) % len(catalog)] in o for p in o)]
    assert len(paired) > 10  # the same complement pairs repeat across orders
