"""Dev signing certificates shared by the wallet unit tests."""

from __future__ import annotations

import pytest

from services.wallet.applepass import PassSigner
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates

PASS_TYPE_ID = "pass.com.example.lodestar.test"
TEAM_ID = "TEAMTEST01"


@pytest.fixture(scope="session")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    """A throwaway dev CA and pass type certificate."""
    return ensure_dev_certificates(tmp_path_factory.mktemp("wallet-certs"), PASS_TYPE_ID, TEAM_ID)


@pytest.fixture(scope="session")
def signer(signing_files: SigningFiles) -> PassSigner:
    """The signer loaded from the dev files."""
    return PassSigner.from_files(
        signing_files.certificate, signing_files.key, signing_files.intermediate
    )
