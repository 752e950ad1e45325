"""What the synthetic traffic (runners/traffic.py) does for the triggers of DESIGN.md section 10.

    complement(catalog, product, per_category) -> the product bought with it (a fixed pair)

The ratios are of the journeys that can show them: a purchase often includes the complement of
its first item (so `personalize train` learns real co-purchase pairs), an email click is not
always followed by a landing view (engagement follow-up), a sign-up page view mostly comes with
an email consent grant (welcome). Purchases then silence (win-back) need nothing of their own:
a customer's last session is their last activity, and a replay's end of input lets every
deadline fire at its own time (DESIGN.md section 3).
"""

from __future__ import annotations

from typing import Any

COMPLEMENT_RATIO = 0.5      # purchases that add the first item's complement
LANDING_RATIO = 0.6         # email clicks followed by a landing view
SIGN_UP_CONSENT_RATIO = 0.8  # sign-ups that grant email consent
# The sign-up convention the welcome trigger reads (settings welcome_signup_*: defaults).
SIGN_UP = {"page": "/signup", "action": "sign_up"}


def complement(catalog: list[Any], product: Any, per_category: int) -> Any:
    """The product of the same popularity rank in the next category: a stable pair (a phone
    and its headphones), so co-purchases repeat across customers."""
    i = next(n for n, p in enumerate(catalog) if p.product_id == product.product_id)
    return catalog[(i + per_category) % len(catalog)]
