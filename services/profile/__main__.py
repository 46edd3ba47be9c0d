"""``python -m services.profile``: the profile service."""

from services.platform.runtime import run_service
from services.profile.server import serve
from services.profile.settings import ProfileSettings

run_service("profile", ProfileSettings, serve)
