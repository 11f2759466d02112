"""params.yaml `report`.

    params = load_section("report", ReportParams)
"""
from __future__ import annotations

from dataclasses import dataclass

EMBEDDINGS = ("tsne", "pca", "none")


@dataclass
class ReportParams:
    """params.yaml `report`: what the report shows."""
    grid_images: int = 48  # images in each OOF grid (misclassified, least confident correct)
    dpi: int = 110
    embedding: str = "tsne"  # what the network learned: tsne | pca | none, of the penultimate features
    embedding_rows: int = 1000  # fold validation images embedded (t-SNE: about 5 s per 1000 on 2 cores)

    def validate(self, err) -> None:
        if not 1 <= self.grid_images <= 400:
            raise err(f"must be 1-400, got {self.grid_images}", "grid_images")
        if not 50 <= self.dpi <= 400:
            raise err(f"must be 50-400, got {self.dpi}", "dpi")
        if self.embedding not in EMBEDDINGS:
            raise err(f"must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}", "embedding")
        if not 10 <= self.embedding_rows <= 20_000:
            raise err(f"must be 10-20000, got {self.embedding_rows}", "embedding_rows")
