"""What price drop and back in stock share: a fire per catalog signal (no TRIGGER here).

The product stage (transforms/product_stage.py) sends a CatalogSignal to each customer who
viewed or carted a product within interest_window and did not buy it; the customer core hands
it to `on_signal` at the signal's time, after the customer's own events at that instant. The
trigger fires at that time with the product as evidence and the old / new price in
`FiredTrigger.details` (the render context's `change`), unless:

- the customer bought the product at or after the interest the product stage saw (its
  purchases reach this stage too, and the core applies those at the same instant first):
  dropped `<type>:bought`;
- it fired for this customer and product less than `cooldown` ago: dropped `<type>:cooldown`.

Then the contact policy decides, as for every trigger (consent, priority, caps, quiet hours).
Key: the product id. Slot: product -> last fire time, at most `max_signal_products` entries (the
oldest evicted, `evicted:<type>`: that product's cooldown is forgotten), each kept `cooldown`.
"""

from __future__ import annotations

from transforms.bounds import evict
from transforms.catalog_changes import CatalogSignal
from transforms.model import BehaviourEvent, FiredTrigger, Product
from transforms.state import CustomerState


class SignalTrigger:
    """A trigger fired by the product stage's signals of one kind (its `type`)."""

    type: str
    priority: int
    has_deadline = False
    event_types: frozenset[str] = frozenset()  # on_event fires nothing: the core skips it

    def __init__(self, cooldown: int, max_products: int, enabled: bool = True) -> None:
        self.enabled = enabled  # core.catalog_signals: not loaded without the product stage
        self.cooldown = cooldown
        self.max_products = max(1, max_products)
        self.evicted = f"evicted:{self.type}"

    def on_signal(self, state: CustomerState, signal: CatalogSignal) -> list[FiredTrigger | str]:
        """A signal of this customer (processed at its occurred_at): fire, or why not."""
        if signal.event_type != self.type:
            return []
        pid = signal.product_id
        t = signal.occurred_at
        bought = state.purchased.get(pid)
        if bought is not None and bought >= signal.interest_at:
            return [f"{self.type}:bought"]
        slot: dict[str, int] | None = state.triggers.get(self.type)
        if slot is None:
            slot = state.triggers[self.type] = {}
        last = slot.get(pid)
        if last is not None and last > t - self.cooldown:
            return [f"{self.type}:cooldown"]
        slot.pop(pid, None)
        slot[pid] = t  # signals come in time order: insertion order is age
        out: list[FiredTrigger | str] = []
        if len(slot) > self.max_products:
            out = [self.evicted] * evict(slot, self.max_products)
        details = {
            "product": Product(pid, signal.category, None, signal.new_price),
            "old_price": signal.old_price,
            "new_price": signal.new_price,
        }
        out.append(FiredTrigger(self.type, pid, t, [pid], [signal.change_id], signal.category,
                                details))
        return out

    def on_event(self, state: CustomerState, event: BehaviourEvent) -> list[FiredTrigger | str]:
        """Behaviour events fire nothing here (the product stage watches them)."""
        return []

    def deadline(self, state: CustomerState) -> int | None:
        """No timers: it fires on signals."""
        return None

    def on_deadline(self, state: CustomerState, t: int) -> list[FiredTrigger]:
        """Never called (no deadlines)."""
        return []

    def expires_at(self, state: CustomerState) -> int | None:
        """When the newest cooldown ends."""
        slot: dict[str, int] | None = state.triggers.get(self.type)
        return max(slot.values()) + self.cooldown if slot else None

    def purge(self, state: CustomerState, now: int) -> None:
        """Drop cooldowns that ended; the slot goes when empty."""
        slot: dict[str, int] | None = state.triggers.get(self.type)
        if slot is None:
            return
        kept = {p: at for p, at in slot.items() if at > now - self.cooldown}
        if kept:
            state.triggers[self.type] = kept
        else:
            del state.triggers[self.type]
