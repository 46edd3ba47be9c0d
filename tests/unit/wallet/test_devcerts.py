"""Dev certificates: generated once, labelled as not Apple's, regenerated for another pass
type, and usable as a signer."""

from __future__ import annotations

from pathlib import Path

from services.wallet.applepass import PassSigner
from services.wallet.devcerts import DEV_LABEL, ensure_dev_certificates


def test_generated_once_and_reused(tmp_path: Path) -> None:
    files = ensure_dev_certificates(tmp_path, "pass.com.example.a", "TEAMA")
    first = files.certificate.read_bytes()
    again = ensure_dev_certificates(tmp_path, "pass.com.example.a", "TEAMA")
    assert again == files
    assert files.certificate.read_bytes() == first
    assert files.key.stat().st_mode & 0o077 == 0
    assert "not issued by Apple" in (tmp_path / "README.txt").read_text()


def test_another_pass_type_gets_new_certificates(tmp_path: Path) -> None:
    ensure_dev_certificates(tmp_path, "pass.com.example.a", "TEAMA")
    files = ensure_dev_certificates(tmp_path, "pass.com.example.b", "TEAMB")
    signer = PassSigner.from_files(files.certificate, files.key, files.intermediate)
    assert (signer.pass_type_id, signer.team_id) == ("pass.com.example.b", "TEAMB")
    assert DEV_LABEL in signer.certificate.subject.rfc4514_string()
    assert DEV_LABEL in signer.intermediate.subject.rfc4514_string()
