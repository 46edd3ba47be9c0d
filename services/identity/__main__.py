"""``python -m services.identity``: the identity service."""

from services.identity.server import serve
from services.identity.settings import IdentitySettings
from services.platform.runtime import run_service

run_service("identity", IdentitySettings, serve)
