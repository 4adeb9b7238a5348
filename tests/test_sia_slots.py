"""The SIA receiver's slot rules (edge.sia_slots), pure: who is evicted when every slot is
taken. The oldest guest goes, not the most silent: a client trickling bytes must not get a
panel evicted that sent its whole report at once, nor one whose frame is being stored."""

from __future__ import annotations

from edge.sia_slots import SlotLimits, SlotTable


def test_a_guest_whose_frame_is_being_stored_is_not_evicted() -> None:
    t = SlotTable(SlotLimits(max_connections=3, max_per_address=4))
    panel = t.admit("10.0.0.9", 0.0).slot
    slow = [t.admit(f"10.0.0.{i}", 0.0).slot for i in (1, 2)]
    assert panel is not None and all(slow)
    t.heard(panel, 0.1, acked=False)
    t.handling(panel, True)  # its frame is complete, the outbox is storing it
    for s in slow:
        assert s is not None
        t.heard(s, 0.5, acked=False)  # trickled bytes: more recent than the panel's frame
    adm = t.admit("10.0.0.3", 0.6)
    assert adm.evict in slow and adm.evict is not panel
    t.handling(panel, False)


def test_when_every_guest_is_being_answered_the_newcomer_is_refused() -> None:
    t = SlotTable(SlotLimits(max_connections=1))
    panel = t.admit("10.0.0.9", 0.0).slot
    assert panel is not None
    t.handling(panel, True)
    adm = t.admit("10.0.0.1", 0.1)
    assert adm.slot is None and adm.evict is None and adm.cap == "total"


def test_the_oldest_guest_is_evicted_however_recently_it_trickled() -> None:
    t = SlotTable(SlotLimits(max_connections=2, max_per_address=4))
    slow = t.admit("10.0.0.1", 0.0).slot
    panel = t.admit("10.0.0.9", 1.0).slot  # sent its report at once, silent since
    assert slow is not None and panel is not None
    t.heard(slow, 1.5, acked=False)  # one more trickled byte
    assert t.admit("10.0.0.2", 1.6).evict is slow


def test_the_address_holding_most_slots_loses_one_first() -> None:
    t = SlotTable(SlotLimits(max_connections=3, max_per_address=4))
    panel = t.admit("10.0.0.9", 0.0).slot  # the oldest, alone on its address
    churn = [t.admit("10.0.0.1", 1.0 + i).slot for i in range(2)]
    assert t.admit("10.0.0.1", 5.0).evict is churn[0] and panel is not None
