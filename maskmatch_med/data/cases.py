"""The unit of data every layout produces: one image volume, with or without its label map."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    case_id: str  # e.g. "patient001_frame01", unique within a dataset
    image: Path
    label: Path | None = None
    group: str = ""  # patient (ACDC) or subject, so both frames of a patient stay in one split
    domain: str = ""  # site / vendor / style the case comes from (domain adaptation); "" = single-source
    frame: int | None = None  # time index when image and label are 4D (x, y, z, t) files (M&Ms)
    label_lut: tuple[int, ...] | None = None  # stored label value v -> label_lut[v] (M&Ms -> ACDC class order)
    # An unlabeled case's label file where one exists on disk: read only to log pseudo-label quality
    # (pl_* keys), never trained on and never used to choose a checkpoint.
    audit_label: Path | None = None


@dataclass
class Splits:
    """Cases per role. Unlabeled cases carry no label path even when one exists on disk (only, for
    logging, an ``audit_label``)."""

    labeled: list[Case] = field(default_factory=list)
    unlabeled: list[Case] = field(default_factory=list)
    validation: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)
    # Domain adaptation: "source" or "target" for every domain name the cases carry; empty otherwise.
    domain_roles: dict[str, str] = field(default_factory=dict)

    def items(self) -> list[tuple[str, list[Case]]]:
        return [("labeled", self.labeled), ("unlabeled", self.unlabeled), ("validation", self.validation), ("test", self.test)]
