"""``python -m services.identity``: the identity service.

``python -m services.identity rotate-keys`` re-encrypts stored e-mails and phones under the
active PII key and re-indexes them under the current index key (see the README).
"""

import asyncio
import sys

from services.identity.server import rotate_keys, serve
from services.identity.settings import IdentitySettings
from services.platform.runtime import run_service
from services.platform.settings import load_settings

if sys.argv[1:] == ["rotate-keys"]:
    asyncio.run(rotate_keys(load_settings(IdentitySettings)))
elif sys.argv[1:]:
    sys.exit(f"unknown command {' '.join(sys.argv[1:])!r}; expected no argument or rotate-keys")
else:
    run_service("identity", IdentitySettings, serve)
