"""The end of a ``colorize-archive`` run, once its batches are done: the index compacted, the
temporaries of killed writers removed, the contact sheet of the run's rows and its summary."""

from __future__ import annotations

from koala import storage
from tasks.archive_index import compact_index
from tasks.colorize_plan import run_rows, run_summary
from tasks.config import ColorizeConfig
from tasks.contact_sheet import sheet_settings, write_contact_sheet


def finish_run(
    cfg: ColorizeConfig,
    refs: list,
    card: dict,
    collection: str,
    new: int,
    digests: dict[str, str] | None = None,
) -> dict:
    """Compact ``cfg.output``'s index, write the contact sheet of this run's rows (the inputs
    ``refs`` done with ``card``'s version at ``cfg.saturation``, with their hints' ``digests``)
    and return the run's summary (:func:`tasks.colorize_plan.run_summary`; ``new``: inputs
    worked on)."""
    output, spec = cfg.output, f"{card['name']}@{card['version']}"
    index = compact_index(output)
    storage.remove_stale_temporaries(output)  # of a worker killed as it wrote
    mine = run_rows(index, refs, card, cfg.saturation, digests)
    del index  # the whole index: only this run's rows are needed from here
    settings = sheet_settings(cfg)
    sheet = write_contact_sheet(output, mine, spec, collection=collection, settings=settings)
    return run_summary(output, spec, mine, sheet, new)
