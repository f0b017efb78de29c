"""The queries of backups and restores."""

from __future__ import annotations

from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chatlens.db.base import Model


async def first_table_with_rows(connection: AsyncConnection) -> str | None:
    """The first of chatlens's tables that holds a row, None when all are empty or absent.

    One row is enough: no table is counted through.
    """
    present = await connection.run_sync(lambda sync: set(sync.dialect.get_table_names(sync)))
    for table in Model.metadata.sorted_tables:
        if table.name not in present:
            continue
        row = await connection.execute(select(literal(1)).select_from(table).limit(1))
        if row.first() is not None:
            return table.name
    return None
