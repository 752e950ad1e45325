"""What every topology builds the same way: the configured core and the output files."""

from __future__ import annotations

from pathlib import Path

from transforms.catalog import Catalog, InMemoryCatalog, read_catalog_jsonl
from transforms.core import Core
from transforms.recommend import Model, Recommender
from transforms.render import Renderer
from transforms.settings import Settings


def build_core(settings: Settings, catalog: Catalog | None = None) -> Core:
    """The core with the trained model (paths.model) and catalog (paths.catalog) if configured."""
    model = Model.load(settings.paths.model) if settings.paths.model else None
    if catalog is None and settings.paths.catalog:
        catalog = InMemoryCatalog(read_catalog_jsonl(Path(settings.paths.catalog)))
    return Core(settings.core, recommender=Recommender(model), catalog=catalog, renderer=Renderer())
