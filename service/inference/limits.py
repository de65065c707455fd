"""What one request may ask of the server: its body, its images, the feature maps it
wants back. Checked before any work, each refusal naming the limit and its setting."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import BadRequest, PayloadTooLarge


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_images: int = 64
    max_feature_map_bytes: int = 32 * 1024 * 1024

    def check_images(self, count: int) -> None:
        """The per-request image limit, also for requests that bring tensors, not images."""
        if not count:
            raise BadRequest("the request holds no image")
        if count > self.max_images:
            raise PayloadTooLarge(
                f"{count} images in one request; the limit is {self.max_images} (CONVSCOPE_MAX_IMAGES_PER_REQUEST)"
            )

    def check_feature_maps(self, estimate: int, encoding: str) -> None:
        """Refuse, before any work, a response whose feature maps would pass the budget."""
        if estimate > self.max_feature_map_bytes:
            raise PayloadTooLarge(
                f"the requested feature maps would take about {estimate} bytes encoded as "
                f"{encoding}, over the budget of {self.max_feature_map_bytes} bytes "
                "(CONVSCOPE_MAX_FEATURE_MAP_BYTES); ask for fewer layers or images, encoding=stats or png, "
                "or dtype=float16"
            )
