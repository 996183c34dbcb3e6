"""Recipe -> Splits, whatever the layout."""

from __future__ import annotations

from maskmatch_med.config import DataConfig
from maskmatch_med.data.acdc import acdc_splits
from maskmatch_med.data.cases import Splits
from maskmatch_med.data.datalist import datalist_splits


def resolve_splits(data: DataConfig) -> Splits:
    if data.domain_adaptation:
        from maskmatch_med.data.domains import domain_splits

        return domain_splits(data)
    if data.layout == "acdc":
        return acdc_splits(data.root, data.manifest, data.num_labeled)
    return datalist_splits(data.datalist)
