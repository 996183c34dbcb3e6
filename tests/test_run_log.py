import csv
import json

import numpy as np

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


def test_undefined_values_are_null_in_jsonl_nan_in_csv_and_absent_from_tensorboard(tmp_path):
    """NaN/Infinity are not JSON (jq rejects the line): metrics.jsonl writes null."""
    class Recorder:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def close(self):
            pass

    log = RunLog(tmp_path, tensorboard=False)
    log.writer = recorder = Recorder()
    log.log("val", 2, {"dice_RV": float("nan"), "dice_LV": 0.5, "best_dice_mean": float("-inf")})
    log.log("train", 2, {"pl_precision_RV": np.float64("nan"), "loss": 1.0})
    log.close()

    def refuse(constant):
        raise ValueError(constant)

    records = [json.loads(line, parse_constant=refuse) for line in open(tmp_path / "metrics.jsonl")]
    assert records[0] == {"kind": "val", "iteration": 2, "dice_RV": None, "dice_LV": 0.5, "best_dice_mean": None}
    assert records[1]["pl_precision_RV"] is None and records[1]["loss"] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "val_log.csv")))
    assert (rows[0]["dice_RV"], rows[0]["best_dice_mean"]) == ("nan", "-inf")  # the CSV convention: nan = undefined
    assert recorder.scalars == [("val/dice_LV", 0.5, 2), ("train/loss", 1.0, 2)]


def test_reopening_keeps_records_up_to_the_checkpoint(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    for iteration in (1, 2, 3):
        log.log("train", iteration, {"loss": float(iteration)})
    log.log("val", 2, {"dice_mean": 0.5})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as stream:
        stream.write('{"kind": "train", "iter')  # torn by a kill
    RunLog(tmp_path, tensorboard=False, keep_until=2).close()
    assert [json.loads(line)["iteration"] for line in open(tmp_path / "metrics.jsonl")] == [1, 2, 2]
    assert [r["iteration"] for r in csv.DictReader(open(tmp_path / "train_log.csv"))] == ["1", "2"]
    RunLog(tmp_path, tensorboard=False).close()  # no keep_until: an append-only reopen keeps everything
    assert len(open(tmp_path / "metrics.jsonl").read().splitlines()) == 3
    RunLog(tmp_path, tensorboard=False, keep_until=0).close()  # a fresh run
    assert open(tmp_path / "metrics.jsonl").read() == "" and list(csv.DictReader(open(tmp_path / "val_log.csv"))) == []
