"""``python -m services.segmentation``: the segmentation service."""

from services.platform.runtime import run_service
from services.segmentation.server import serve
from services.segmentation.settings import SegmentationSettings

run_service("segmentation", SegmentationSettings, serve)
