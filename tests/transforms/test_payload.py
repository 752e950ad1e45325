import hashlib

from tests.builders import T0
from transforms.payload import message_id


def test_message_id_is_32_hex_chars_of_sha256_over_the_four_fields():
    mid = message_id("c1", "cart_abandonment", "cart-1", T0)
    canonical = f'["c1","cart_abandonment","cart-1",{T0}]'
    assert mid == hashlib.sha256(canonical.encode()).hexdigest()[:32]


def test_same_inputs_same_id_any_field_changes_it():
    base = ("c1", "browse_intensity", "shoes", T0)
    assert message_id(*base) == message_id(*base)
    variants = [("c2", *base[1:]), (base[0], "cart_abandonment", *base[2:]),
                (*base[:2], "hats", T0), (*base[:3], T0 + 1)]
    assert len({message_id(*v) for v in [base, *variants]}) == 5


def test_fields_cannot_be_shifted_into_each_other():
    assert message_id("a|b", "c", "k", T0) != message_id("a", "b|c", "k", T0)
    assert message_id('a","b', "c", "k", T0) != message_id("a", 'b","c', "k", T0)
