"""Price drop (DESIGN.md section 10): a product a customer viewed or carted within
interest_window, and did not buy since, dropped in price by at least price_drop_min_pct.

The product stage (transforms/product_stage.py) detects the drop and fans it out; this trigger
fires on the customer's signal (transforms/triggers/signal_base.py) at the change's time, at
most once per customer and product per `price_drop_cooldown`. Templates: templates/price_drop/
(the context's `change` holds old_price and new_price).
"""

from __future__ import annotations

from transforms.catalog_changes import PRICE_DROP
from transforms.settings import CoreSettings
from transforms.triggers.signal_base import SignalTrigger

TYPE = PRICE_DROP


class PriceDrop(SignalTrigger):
    """Fires on a price-drop signal of the product stage."""

    type = TYPE
    priority = 3

    def __init__(self, settings: CoreSettings) -> None:
        super().__init__(settings.price_drop_cooldown, settings.max_signal_products,
                         settings.catalog_signals)


TRIGGER = PriceDrop
