"""GET /items: the served model version's catalogue, most popular first (for the shop page)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import Field

from serving.dependencies import get_recommender
from serving.recommender import Recommender
from serving.schemas import CatalogueItem, CataloguePage, ErrorBody
from streamrec.artifacts import ModelArtifacts
from streamrec.events import MAX_ITEM_ID

router = APIRouter(tags=["catalogue"])
MAX_LIMIT = 200
MAX_IDS = 100
QueryItemId = Annotated[int, Field(ge=0, le=MAX_ITEM_ID)]  # a query string: "123" is the integer 123
_ranked: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # model version -> (rows by popularity, rank per row)


def popularity_ranking(model: ModelArtifacts) -> tuple[np.ndarray, np.ndarray]:
    """Rows most popular first and each row's 1-based rank, computed once per served version."""
    if model.version not in _ranked:
        order = np.argsort(-model.item_popularity, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        _ranked.clear()
        _ranked[model.version] = order, rank
    return _ranked[model.version]


@router.get(
    "/items",
    response_model=CataloguePage,
    responses={422: {"model": ErrorBody, "description": "Invalid query parameter: the message says which."}},
    summary="Catalogue of the served model",
)
async def items(
    limit: int = Query(24, ge=1, le=MAX_LIMIT, description=f"Items per page (1..{MAX_LIMIT})."),
    offset: int = Query(0, ge=0, le=10**9, description="Items to skip, in popularity order."),
    ids: list[QueryItemId] | None = Query(None, max_length=MAX_IDS, description="Only these items, in this order "
                                     f"(at most {MAX_IDS}; unknown ones are left out); limit and offset then do not apply."),
    recommender: Recommender = Depends(get_recommender),
) -> CataloguePage:
    """Item id, category (when the dataset has them) and training popularity, from the model version
    the API serves (no online-store read)."""
    model = recommender.model
    order, rank = popularity_ranking(model)
    if ids is not None:
        rows = model.rows_of(np.asarray(ids, dtype=np.int64))
        rows = rows[rows >= 0]
    else:
        rows = order[offset:offset + limit]
    categories = model.item_categories
    page = [CatalogueItem(item_id=int(model.item_ids[r]), popularity=int(model.item_popularity[r]), rank=int(rank[r]),
                          category=None if categories is None or categories[r] < 0 else int(categories[r]))
            for r in rows.tolist()]
    return CataloguePage(model_version=model.version, total=len(model.item_ids), offset=offset, limit=limit,
                         has_categories=categories is not None, items=page)
