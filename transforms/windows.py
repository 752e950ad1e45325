"""Windowed behaviour features per customer over event time (DESIGN.md section 4).

(implementation in progress by the lead; the Features record below is the stable interface)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Features:
    """A customer's windowed behaviour as of `as_of` (epoch ms); input of scoring."""

    as_of: int
    views_1h: dict[str, int] = field(default_factory=dict)     # category -> product views
    views_24h: dict[str, int] = field(default_factory=dict)    # category -> product views
    cart_adds_24h: int = 0
    purchases_30d: int = 0
    revenue_30d: float = 0.0
    sessions_7d: int = 0
    email_opens_30d: int = 0
    email_clicks_30d: int = 0
    last_activity_at: int | None = None
