"""``python -m services.identity``: the identity service.

``python -m services.identity rotate-keys [--check]`` runs the platform's key rotation
(:mod:`services.rotate_keys`): every service's PII is re-encrypted under the active key, not
identity's alone, so the old key is never dropped while profile data still needs it.
"""

import sys

if sys.argv[1:2] == ["rotate-keys"]:
    from services.rotate_keys import main

    sys.exit(main(sys.argv[2:], prog="python -m services.identity rotate-keys"))
elif sys.argv[1:]:
    sys.exit(f"unknown command {' '.join(sys.argv[1:])!r}; expected no argument or rotate-keys")
else:
    from services.identity.server import serve
    from services.identity.settings import IdentitySettings
    from services.platform.runtime import run_service

    run_service("identity", IdentitySettings, serve)
