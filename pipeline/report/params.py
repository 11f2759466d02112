"""params.yaml `report`.

    params = load_section("report", ReportParams)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportParams:
    """params.yaml `report`: what the report shows."""
    grid_images: int = 48  # images in each OOF grid (misclassified, least confident correct)
    dpi: int = 110

    def validate(self, err) -> None:
        if not 1 <= self.grid_images <= 400:
            raise err(f"must be 1-400, got {self.grid_images}", "grid_images")
        if not 50 <= self.dpi <= 400:
            raise err(f"must be 50-400, got {self.dpi}", "dpi")
