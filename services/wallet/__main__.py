"""``python -m services.wallet``: the wallet service."""

from services.platform.runtime import run_service
from services.wallet.server import serve
from services.wallet.settings import WalletSettings

run_service("wallet", WalletSettings, serve)
