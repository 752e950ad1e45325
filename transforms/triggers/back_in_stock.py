"""Back in stock (DESIGN.md section 10): a product a customer viewed or carted within
interest_window, and did not buy since, went from out of stock to in stock.

The product stage (transforms/product_stage.py) detects the restock and fans it out; this
trigger fires on the customer's signal (transforms/triggers/signal_base.py) at the change's
time, at most once per customer and product per `back_in_stock_cooldown`. Templates:
templates/back_in_stock/.
"""

from __future__ import annotations

from transforms.catalog_changes import BACK_IN_STOCK
from transforms.settings import CoreSettings
from transforms.triggers.signal_base import SignalTrigger

TYPE = BACK_IN_STOCK


class BackInStock(SignalTrigger):
    """Fires on a restock signal of the product stage."""

    type = TYPE
    priority = 2

    def __init__(self, settings: CoreSettings) -> None:
        super().__init__(settings.back_in_stock_cooldown, settings.max_signal_products,
                         settings.catalog_signals)


TRIGGER = BackInStock
