"""Key rotation bookkeeping: what a stored value needs, what a pass counts, what the report
says about dropping the old keys."""

from __future__ import annotations

from services.platform.crypto import FieldCipher, generate_key, parse_key
from services.platform.rotation import MALFORMED, Tally, examine, summary

K1, K2 = (parse_key(generate_key()) for _ in range(2))
INDEX = parse_key(generate_key())
OLD = FieldCipher({"k1": K1}, "k1", INDEX)
RING = FieldCipher({"k1": K1, "k2": K2}, "k2", INDEX)
ONLY_NEW = FieldCipher({"k2": K2}, "k2", INDEX)


def test_a_value_under_an_old_key_gets_a_replacement_under_the_active_one() -> None:
    stored = OLD.encrypt("ada@example.com", "email").to_document()
    found = examine(RING, stored, "email")
    assert found.under_old_key
    assert found.clear == "ada@example.com"
    assert found.nonce == stored["n"]
    assert found.replacement is not None
    assert found.replacement.key_id == "k2"
    assert ONLY_NEW.decrypt(found.replacement, "email") == "ada@example.com"


def test_a_current_value_needs_nothing() -> None:
    found = examine(RING, RING.encrypt("x", "email").to_document(), "email")
    assert (found.under_old_key, found.replacement, found.clear) == (False, None, "x")


def test_unreadable_values_are_reported_not_raised() -> None:
    missing_key = examine(ONLY_NEW, OLD.encrypt("x", "email").to_document(), "email")
    assert (missing_key.key_id, missing_key.readable, missing_key.under_old_key) == (
        "k1",
        False,
        True,
    )
    wrong_context = examine(RING, RING.encrypt("x", "phone").to_document(), "email")
    assert (wrong_context.readable, wrong_context.under_old_key) == (False, False)
    malformed = examine(RING, {"kid": "k1"}, "email")
    assert (malformed.key_id, malformed.readable) == (MALFORMED, False)


def test_a_tally_counts_what_is_left_by_key_and_index() -> None:
    tally = Tally("identity", "identifiers")
    tally.count(examine(RING, OLD.encrypt("a", "email").to_document(), "email"))
    tally.count(examine(RING, RING.encrypt("b", "email").to_document(), "email"), stale_index=True)
    tally.count(examine(RING, RING.encrypt("c", "email").to_document(), "email"))
    tally.count(
        examine(FieldCipher({"k2": K2}, "k2", INDEX), OLD.encrypt("d", "e").to_document(), "e")
    )
    assert tally.to_json() == {
        "service": "identity",
        "collection": "identifiers",
        "checked": 4,
        "rotated": 0,
        "left": 3,
        "left_by_key": {"k1": 2},
        "stale_index": 1,
        "unreadable": 1,
    }


def test_the_summary_says_when_the_old_keys_may_go() -> None:
    done = [Tally("identity", "identifiers", checked=3, rotated=3), Tally("profile", "timeline")]
    report = summary(done, RING, check_only=False)
    assert report["left"] == 0
    assert report["old_keys_may_be_dropped"] is True
    assert report["old_key_ids"] == ["k1"]
    assert report["services"] == {
        "identity": {"rotated": 3, "left": 0, "unreadable": 0},
        "profile": {"rotated": 0, "left": 0, "unreadable": 0},
    }
    assert "may now be dropped" in report["message"]
    assert "(k1)" in report["message"]


def test_the_summary_says_what_is_left_and_which_keys_to_add_back() -> None:
    left = Tally("profile", "profiles", checked=2, left=2, left_by_key={"k1": 2}, unreadable=2)
    report = summary([left], ONLY_NEW, check_only=True)
    assert report["old_keys_may_be_dropped"] is False
    assert report["left_by_key"] == {"k1": 2}
    assert "run without --check" in report["message"]
    assert "add key(s) k1 back" in report["message"]
