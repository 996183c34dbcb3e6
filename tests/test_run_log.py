import csv
import json

from maskmatch_med.engine.run_log import RunLog, validation_summary


def test_validation_summary_names_the_headline_and_the_classes():
    metrics = {"dice_RV": 0.5121, "dice_Myo": 0.59, "dice_LV": 0.7824, "dice_mean": 0.628}
    assert validation_summary(metrics) == "Dice 0.628 (RV 0.512, Myo 0.590, LV 0.782)"


def test_validation_summary_of_natural_images_and_domains():
    assert validation_summary({"miou": 0.41, "iou_background": 0.9, "iou_dining_table": 0.1}) == (
        "mIoU 0.410 (background 0.900, dining_table 0.100)")
    metrics = {"dice_LV": 0.6, "dice_mean": 0.6, "dice_LV/source": 0.8, "dice_mean/source": 0.8,
               "dice_LV/target": 0.4, "dice_mean/target": 0.4}
    assert validation_summary(metrics) == (
        "Dice 0.600 (LV 0.600); source: Dice 0.800 (LV 0.800); target: Dice 0.400 (LV 0.400)")
    assert validation_summary({"accuracy": 0.25}) == "accuracy 0.250"  # no headline: the keys as they are


def test_run_log_keeps_raw_keys_in_jsonl_and_csv(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    log.log("val", 2, {"dice_mean": 0.5, "dice_mean/target": 0.4})
    log.log("val", 4, {"dice_mean": 0.6, "dice_mean/target": 0.5})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "val_log.csv")))
    assert [(r["iteration"], r["dice_mean/target"]) for r in rows] == [("2", "0.4"), ("4", "0.5")]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert records[1] == {"kind": "val", "iteration": 4, "dice_mean": 0.6, "dice_mean/target": 0.5}
