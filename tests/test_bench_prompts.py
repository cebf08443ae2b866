"""The prompt benchmark's bookkeeping: cascade columns, part joining and the report table."""

from __future__ import annotations

import numpy as np

from experiments.benchmarks.bench_prompts import cascade_accuracy, combine, compare, markdown, row


def _report(labels: list[int], small_pred: list[int], confidence: list[float], part: str = "1/1") -> dict:
    return {"config": "c.yaml", "model": "m", "engine": "vllm", "dtype": "float32", "mails": len(labels),
            "spam_rate": float(np.mean(labels)), "cpus": 2, "mail_ids": [f"{part}-{i}" for i in range(len(labels))],
            "labels": labels, "rows": [], "part": part, "small": {"pred": small_pred, "confidence": confidence}}


def test_cascade_defers_the_least_confident_small_answers_to_the_prompt() -> None:
    # small tier wrong on mails 0 and 1, least confident on 1 and 3; the prompt is right on 1, wrong on 3
    report = _report(labels=[1, 1, 0, 0], small_pred=[0, 0, 0, 0], confidence=[0.9, 0.55, 0.8, 0.6])
    prompt = [0.2, 0.7, 0.1, 0.9]
    assert cascade_accuracy(report, prompt, 0.25) == 0.75  # mail 1 fixed
    assert cascade_accuracy(report, prompt, 0.5) == 0.5  # mail 1 fixed, mail 3 broken
    assert cascade_accuracy(report, prompt, 0.0) == 0.5


def test_parts_join_rows_and_small_tier_outputs_in_part_order() -> None:
    parts = []
    for index, (labels, probs) in enumerate([([0, 1], [0.3, 0.8]), ([1, 0], [0.4, 0.1])], start=1):
        report = _report(labels, [0, 1], [0.9, 0.6], part=f"{index}/2")
        p = np.asarray(probs)
        report["rows"] = [{**row("6 shots x 8 tok, query 48 tok", np.c_[1 - p, p], np.array([290, 292]),
                                 np.asarray(labels), 1.0), "shots": 6, "shot_max_tokens": 8, "max_input_tokens": 48}]
        parts.append(report)
    joined = combine(list(reversed(parts)))
    assert joined["labels"] == [0, 1, 1, 0]
    assert joined["small"]["pred"] == [0, 1, 0, 1]
    assert joined["rows"][0]["spam_prob"] == [0.3, 0.8, 0.4, 0.1]
    assert joined["rows"][0]["accuracy"] == 0.75
    assert compare(joined, (6, 8, 48)) is None  # no baseline scored
    table = markdown(joined)
    assert "| cascade, 10% deferred | cascade, 20% deferred |" in table
    assert "| 6 shots x 8 tok, query 48 tok | 1.000 | 0.750 | 0 | 1 |" in table  # one spam called ham


def test_a_part_without_small_tier_outputs_drops_the_cascade_columns() -> None:
    parts = [_report([0, 1], [0, 1], [0.9, 0.6], part="1/2"), _report([1, 0], [1, 0], [0.9, 0.6], part="2/2")]
    del parts[1]["small"]
    joined = combine(parts)
    assert "small" not in joined
    assert "cascade," not in markdown(joined)
