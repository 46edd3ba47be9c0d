"""Device logs reach the service log only through an allow-list: no names, e-mail addresses,
phone numbers, URLs or tokens, bounded length, and what failed still readable."""

from __future__ import annotations

import pytest

from services.wallet.devicelogs import HIDDEN, MAX_SHOWN, MAX_SHOWN_LENGTH, log_fields, redacted


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("Register for jane.doe@example.com failed", "jane.doe"),
        ("mail <ops+x@corp.example> now", "corp.example"),
        ("call +34 612 345 678 please", "345"),
        ("call 612345678 please", "612345678"),
        ("call (555) 123-4567 please", "123-4567"),
        ("see https://wallet.example.com/v1/passes?t=secret", "wallet.example.com"),
        ("token 9fK2xQ7pLm3VbN8sT1wR4yZ6 sent", "9fK2xQ7pLm3VbN8sT1wR4yZ6"),
        ("device b054037bc137441aaf6c99a164b28cb3 failed", "b054037bc137441aaf6c99a164b28cb3"),
        ("failed for Zebulon Quixote-Marchetti", "Zebulon"),
        ("failed for Ada Lovelace", "Lovelace"),
        ("Straße 12, München", "München"),
    ],
)
def test_personal_data_links_and_tokens_never_pass(message: str, secret: str) -> None:
    shown = redacted(message)
    assert secret not in shown
    assert HIDDEN in shown


def test_what_failed_stays_readable() -> None:
    message = (
        "[2024-05-01 10:00:00 +0000] Web service error for pass.com.example.lodestar.dev: "
        "Response to 'What changed?' request included 1 serial numbers but the lastUpdated "
        "tag remained the same. (status 401)"
    )
    shown = redacted(message)
    assert shown.startswith("[2024-05-01 10:00:00 +0000] Web service error for ")
    assert "pass.com.example.lodestar.dev" in shown
    assert "lastUpdated tag remained the same." in shown
    assert "(status 401)" in shown
    assert len(shown) <= MAX_SHOWN_LENGTH + 1


def test_control_characters_and_lone_surrogates_are_hidden() -> None:
    shown = redacted("bad\npass\x00 \ud800 error\x1b[31m")
    assert shown == HIDDEN
    assert redacted("pass\nerror") == "pass error"


def test_long_messages_are_cut() -> None:
    message = "error " * 160 + "jane.doe@example.com trailing"
    shown = redacted(message)
    assert "jane" not in shown
    assert len(shown) == MAX_SHOWN_LENGTH + 1
    assert shown.endswith("…")
    assert redacted("x" * 100_000) == f"{HIDDEN}…"


def test_fields_count_every_message_and_show_the_first_few() -> None:
    fields = log_fields([f"error {i}" for i in range(50)])
    assert fields["messages"] == 50
    assert fields["logs"] == [f"error {HIDDEN}"] * MAX_SHOWN
