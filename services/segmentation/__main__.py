"""``python -m services.segmentation``: the segmentation service.

``python -m services.segmentation fit-clv --transactions FILE.csv --calibration-end
YYYY-MM-DD`` fits the purchase models on an analyst's own transactions and prints the
parameters as JSON (see the README).
"""

import sys

if sys.argv[1:2] == ["fit-clv"]:
    from services.segmentation.cli import main

    sys.exit(main(sys.argv[1:]))
elif sys.argv[1:]:
    sys.exit(f"unknown command {' '.join(sys.argv[1:])!r}; expected no argument or fit-clv")
else:
    from services.platform.runtime import run_service
    from services.segmentation.server import serve
    from services.segmentation.settings import SegmentationSettings

    run_service("segmentation", SegmentationSettings, serve)
