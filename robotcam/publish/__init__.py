"""Publishing the stream to media servers over WHIP (RFC 9725): `publish:` in the config."""

from robotcam.publish.component import PublishComponent
from robotcam.publish.publisher import PublishTiming

__all__ = ["PublishComponent", "PublishTiming"]
