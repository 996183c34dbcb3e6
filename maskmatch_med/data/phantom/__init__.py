"""A synthetic cardiac cine-MRI phantom written in the real ACDC on-disk layout.

`write_acdc_phantom(out_dir, patients, seed, style)` writes `patientNNN/` directories that the ACDC reader
(`maskmatch_med.data.acdc`) reads exactly like the real data set:

    patientNNN/Info.cfg                      ED, ES, Group, Height, NbFrame, Weight
    patientNNN/patientNNN_frameXX.nii.gz     int16 short-axis stack, (X, Y, Z), Z = slice axis
    patientNNN/patientNNN_frameXX_gt.nii.gz  uint8 labels: 0 background, 1 RV, 2 myocardium, 3 LV

(ACDC also ships a 4D cine file per patient; the training code never reads it, so it is not written.)

The package, by concern: anatomy.py (heart, pathology and surroundings, rendered as tissue maps and
labels), acquisition.py (a scan of them: geometry, intensities, image formation, the styles A-D and
their table), acdc_layout.py (writing the ACDC layout: NIfTI files, affines, Info.cfg).
"""

from maskmatch_med.data.phantom.acdc_layout import PHANTOM_MARKER, phantom_style, write_acdc_phantom
from maskmatch_med.data.phantom.acquisition import STYLES
from maskmatch_med.data.phantom.anatomy import GROUPS

__all__ = ["GROUPS", "PHANTOM_MARKER", "STYLES", "phantom_style", "write_acdc_phantom"]
