"""What every topology builds the same way: the configured core, the topics it reads."""

from __future__ import annotations

from pathlib import Path

from transforms.catalog import Catalog, InMemoryCatalog, read_catalog_jsonl
from transforms.core import Core
from transforms.recommend import Model, Recommender
from transforms.render import Renderer
from transforms.settings import Settings


def build_core(settings: Settings, catalog: Catalog | None = None,
               snapshots: bool = True) -> Core:
    """The core with the trained model (paths.model: recommendations and segments) and a catalog;
    `snapshots` False when nothing writes feature snapshots (Core: they are not computed).

    The catalog is `catalog` if given, else the JSONL file paths.catalog, else, with
    redis.use_catalog (Kafka runs), the Redis catalog behind a small local cache; offline
    replays without a catalog render from what the events themselves say about the products.
    """
    model = Model.load(settings.paths.model) if settings.paths.model else None
    if catalog is None and settings.paths.catalog:
        catalog = InMemoryCatalog(read_catalog_jsonl(Path(settings.paths.catalog)))
    elif catalog is None and settings.redis.use_catalog:
        from pipelines.redis_catalog import open_catalog

        catalog = open_catalog(settings)
    return Core(
        settings.core, recommender=Recommender(model), catalog=catalog, renderer=Renderer(),
        segments=model.segments if model is not None else None, snapshots=snapshots,
    )


def changes_topic(settings: Settings) -> str | None:
    """The catalog-changes topic a Kafka job reads (when it exists): none with
    core.catalog_signals false (no product stage: the topic's changes stay in Kafka) or no
    kafka.catalog_changes_topic."""
    if not settings.core.catalog_signals:
        return None
    return settings.kafka.catalog_changes_topic or None
