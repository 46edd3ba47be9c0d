"""Download links of Apple passes: ``GET /downloads/{serial}?expires=…&sig=…`` serves the
signed ``.pkpass`` without any key, so the link can go to the customer's browser (the HTTP
handler is :class:`services.wallet.webservice.PassDownloads`).

A link is an HMAC (SHA-256) over the serial number and its expiry, a few minutes ahead: it
opens that pass only, and only until then. A wrong signature is 403 (checked before the pass
is looked up, so links cannot be guessed to probe serials), an expired link 410, an unknown
serial (or a Google pass, which is saved by its link instead) 404, a voided pass 410.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

PATH = "/downloads/{serialNumber}"
# What a serial number can be (UUIDs are issued); anything else is no pass.
SERIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")


class DownloadLinks:
    """Makes and checks signed download links of ``base_url`` (the wallet's public URL)."""

    def __init__(
        self,
        secret: bytes,
        base_url: str,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.clock = clock

    def _signature(self, serial_number: str, expires: int) -> str:
        message = f"pkpass-download\n{serial_number}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def link(self, serial_number: str) -> tuple[str, datetime]:
        """A fresh link to the pass and when it expires."""
        expires = int(self.clock()) + self.ttl_s
        query = urlencode({"expires": expires, "sig": self._signature(serial_number, expires)})
        url = f"{self.base_url}{PATH.format(serialNumber=serial_number)}?{query}"
        return url, datetime.fromtimestamp(expires, UTC)

    def problem(self, serial_number: str, expires: str, signature: str) -> int | None:
        """The HTTP status refusing the link (403 forged, 410 expired), or None when good."""
        if not _EXPIRES.fullmatch(expires) or not _SIGNATURE.fullmatch(signature):
            return 403
        expected = self._signature(serial_number, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return 403
        return 410 if self.clock() > int(expires) else None
