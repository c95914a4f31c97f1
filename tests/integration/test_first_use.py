"""A new embedded store just works, however many callers reach it first at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sagakit.stores import open_store


async def test_callers_racing_to_a_new_file_all_find_its_tables(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        # the first use migrates; the others must wait for it, not run into "no such table"
        found = await asyncio.gather(*(store.list_sagas() for _ in range(8)))
        assert found == [[]] * 8
        assert await store.is_migrated()
    finally:
        await store.close()


async def test_several_new_stores_migrate_side_by_side_in_one_process(tmp_path: Path) -> None:
    stores = [open_store(f"sqlite:///{tmp_path / f's{n}.db'}") for n in range(4)]
    try:
        await asyncio.gather(*(s.list_sagas() for s in stores))
        assert all([await s.is_migrated() for s in stores])
    finally:
        for store in stores:
            await store.close()
