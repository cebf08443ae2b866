"""The markdown of the monitor benchmark (:mod:`experiments.benchmarks.bench_monitor`): tables and a
conclusion derived from the numbers."""

from __future__ import annotations

from typing import Any

from experiments.benchmarks.monitor_streams import AFTER, HORIZON, MONITORS, PREFIX, TUNERS

def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _delay(row: dict[str, Any]) -> str:
    if row["median_delay"] is None:
        return "–"
    return f"{row['median_delay']:.0f} ({row['delay_q25']:.0f}–{row['delay_q75']:.0f})"


def _share(row: dict[str, Any]) -> str:
    low, high = row["ci95"] or (None, None)
    if row["rate"] is None:
        return "–"
    return f"{row['rate']:.3f} ({row['count']}/{row['of']}; 95 % CI {low:.3f}–{high:.3f})"


def conclusions(report: dict[str, Any]) -> list[str]:
    """Plain sentences read off the numbers."""
    delta, rate, null = report["delta_monitor"], report["false_alarm_rate"], report["null"]
    worst = max(MONITORS, key=lambda m: null["false_alarms"][m]["rate"] or 0.0)
    lines = [f"- Without drift, {null['any_false_alarm']['count']} of {null['certified']} streams raised a false "
             f"alarm: {rate:.3f} {'≤' if rate <= delta else '>'} δ_monitor = {delta:g}"
             + ("" if rate <= delta else " (see the interval: chance, or a monitor that is not valid here)")
             + f"; the most alarming monitor, {worst}, at {null['false_alarms'][worst]['rate']:.3f} against its level "
             f"{report['delta_per_monitor']:.4f}."]
    for name, block in report["drift"].items():
        after = block["after_drift"]
        broken = after["guarantee_broken"]
        first = min(MONITORS, key=lambda m: (block["monitors"][m]["median_delay"] is None,
                                             block["monitors"][m]["median_delay"] or 0))
        level_shift = abs(block["drifted_mean_p_value"] - 0.5)
        lines.append(
            f"- {name}: the old rule's accepted error on the drifted population is {after['accepted_error_mean']:.3f} "
            f"on average (α = {report['alpha']:g}; above α in {broken:.0%} of streams"
            + ("" if broken >= 0.5 else ": the error guarantee mostly still holds, so detecting this drift is about "
                                          "exchangeability, not risk")
            + f"). Some monitor alarmed after the switch in {block['detection_rate']:.0%} of streams"
            + ("" if block["median_delay"] is None else
               f", median {block['median_delay']:.0f} drifted requests; fastest by median: {first}")
            + ". Drifted scores' mean conformal p-value against the certify part is "
              f"{block['drifted_mean_p_value']:.3f}"
            + (": their level hardly moves, and a shift in level is what the exchangeability monitor bets on."
               if level_shift < 0.03 else "."))
        recert = report["recertification"][name]
        if not recert["triggered"]:
            continue
        parts = []
        for labels, by_tuner in recert["by_labels"].items():
            rows = []
            for tuner in TUNERS:
                row = by_tuner[tuner]
                rows.append(f"{tuner} refused in {row['refused_rate']:.0%}" + (
                    "" if not row["certified"] else
                    f" (error ≤ α in {row['holds']:.0%} of those certified, deferring {row['defer_rate_mean']:.0%}; "
                    f"a certified claim failed in {row['violated_rate']:.1%} of alarmed streams)"))
            parts.append(f"on {labels} labels " + ", ".join(rows))
        lines.append(f"  Recertification in the {recert['triggered']} alarmed streams (keeping the old rule holds "
                     f"α in {recert['old_rule']['holds']:.0%}): " + "; ".join(parts)
                     + f". δ = {report['delta_certificate']:g} bounds the failed share.")
    return lines


def markdown(report: dict[str, Any]) -> str:
    cert, null = report["certificate"], report["null"]
    lines = [
        "# Production monitors: false alarms, detection delay, recertification", "",
        f"Regenerate with `python -m experiments.benchmarks.bench_monitor` ({report['seconds']:.0f} s). "
        f"{report['config']}: small tier TF-IDF LR on {report['small_tier']['train_labels']} labels, confidence "
        f"policy; pool of {report['small_tier']['pool']} mails nothing was fitted on (certify part + test split), "
        f"small-tier accuracy {report['small_tier']['pool_accuracy']:.3f}. Per group (accuracy, mails): "
        + ", ".join(f"{g} {a:.3f} ({report['small_tier']['mails_by_group'][g]})"
                    for g, a in report["small_tier"]["accuracy_by_group"].items()) + ".",
        "",
        f"Served certificate (joint budget on the config's certify part, n={cert['n']}): accepted error ≤ "
        f"{cert['target']['accepted_error']:g} and deferral rate ≤ {cert['target']['defer_rate']:g} with probability "
        f"≥ {1 - cert['delta']:g}; achieved {cert['achieved']['accepted_error']:.4f} / "
        f"{cert['achieved']['defer_rate']:.3f}, "
        f"bound {cert['bound']['accepted_error']:.4f} / {cert['bound']['defer_rate']:.3f}. Each stream recertifies "
        "the same budget on its own certify part.",
        "",
        f"Monitors: risk (labels of accepted requests, {report['label_rate']:.0%} of requests labelled at random), "
        f"rate (every deferral), exchangeability (every deferral score against the certify part's), each at "
        f"δ_monitor/3 = {report['delta_per_monitor']:.4f}, so any false alarm has probability ≤ δ_monitor = "
        f"{report['delta_monitor']:g}.",
        "", "## Without drift", "",
        f"{null['streams']} streams drawn, each a fresh certify part and {null['stream_length']} requests; "
        f"{null['certified']} certified and monitored ({null['refused']} refused at certification). Served rule: "
        f"deferral rate {null['defer_rate_mean']:.3f}, accepted error {null['accepted_error_mean']:.4f} on average "
        f"(max {null['accepted_error_max']:.4f}); the certificate held on the traffic in "
        f"{null['certificate_held']['risk']:.1%} (error) / {null['certificate_held']['rate']:.1%} (rate) of streams; "
        f"alarms where it failed (true alarms): {null['alarms_where_certificate_failed']}.",
        "",
        "| monitor | false-alarm rate | level |",
        "|---|---|---:|",
    ]
    lines += [f"| {name} | {_share(null['false_alarms'][name])} | {report['delta_per_monitor']:.4f} |"
              for name in MONITORS]
    lines += [f"| **any** | {_share(null['any_false_alarm'])} | {report['delta_monitor']:g} |", "",
              "## Drift", "",
              f"{PREFIX} undrifted requests, then up to {HORIZON} drifted ones (drawn with replacement). Delay: "
              "drifted requests up to the alarm, median (quartiles); risk also in labels. Detection: an alarm after "
              "the switch within the horizon.", ""]
    for name, block in report["drift"].items():
        after, before = block["after_drift"], block["before_drift"]
        lines += [
            f"### {name}", "",
            f"{block['scenario']}. {block['streams']} streams ({block['refused']} refused at certification). Drifted "
            "traffic by group: " + ", ".join(f"{g} {v:.1%}" for g, v in block["drifted_group_shares"].items() if v)
            + ". Old rule before → after the switch (population): accepted error "
            f"{before['accepted_error_mean']:.4f} → {after['accepted_error_mean']:.4f} (served: "
            f"{after['accepted_error_served_mean']:.4f}; above α = {report['alpha']:g} in "
            f"{after['guarantee_broken']:.0%} of streams), deferral rate {before['defer_rate_mean']:.3f} → "
            f"{after['defer_rate_mean']:.3f} (above β in {after['rate_bound_broken']:.0%}). Detected in "
            f"{_percent(block['detection_rate_where_broken'])} of the streams whose error guarantee broke. Mean "
            "conformal p-value of a drifted score against the certify part: "
            f"{block['drifted_mean_p_value']:.3f} (0.5: no shift in level).",
            "",
            "| monitor | detection rate | median delay (q25–q75), requests | max | alarms before the switch | "
            "alarms while its claim held |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for monitor in MONITORS:
            row = block["monitors"][monitor]
            lines.append(f"| {monitor} | {row['detection_rate']:.2f} | {_delay(row)} | "
                         f"{_number(row['delay_max'], 0)} | {row['alarms_before_switch']} | "
                         f"{row['alarms_while_claim_held']} |")
        lines += [f"| **any** | {block['detection_rate']:.2f} | {_delay(block)} | {_number(block['delay_max'], 0)} | "
                  f"{block['alarms_before_switch']} | |", "",
                  f"Risk monitor delay in labels: median {_delay(block['risk_label_delay'])}.", ""]
    lines += ["## Recertification", "",
              "At the first alarm after the switch, the first N labelled drifted requests after it (fresh draws, never "
              "used for fitting; about N / label rate requests served by the old rule meanwhile) certify again: the "
              "same joint budget, and an accepted-error budget at the same α without the rate bound. Accepted error "
              "and deferral rate on the drifted population (exact), mean over the streams certified; `holds`: share "
              "of them with accepted error ≤ α; `violated`: share of all alarmed streams certified with a claim "
              "that fails on the drifted population (what δ bounds; `holds` is conditional on certification, which "
              "selects lucky labels when most are refused); served error over the next "
              f"{AFTER} requests; false alarms of fresh monitors over those requests (the exchangeability reference is "
              "the new certify part), counted where the new certificate holds.", "",
              "| scenario | rule | alarmed streams | refused | accepted error | holds | violated | deferral rate | "
              "served error | false alarms after |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, recert in report["recertification"].items():
        if not recert["triggered"]:
            lines.append(f"| {name} | no alarm, nothing recertified | 0 | | | | | | | |")
            continue
        old = recert["old_rule"]
        lines.append(f"| {name} | old rule kept | {recert['triggered']} | – | {old['accepted_error_mean']:.4f} | "
                     f"{old['holds']:.2f} | – | {old['defer_rate_mean']:.3f} | "
                     f"{old['accepted_error_served_mean']:.4f} | – |")
        for labels, by_tuner in recert["by_labels"].items():
            for tuner in TUNERS:
                row = by_tuner[tuner]
                lines.append(f"| {name} | {tuner} on {labels} labels | {recert['triggered']} | {row['refused']} | "
                             f"{_number(row['accepted_error_mean'], 4)} | {_number(row['holds'], 2)} | "
                             f"{row['violated_rate']:.3f} | "
                             f"{_number(row['defer_rate_mean'])} | {_number(row['accepted_error_served_mean'], 4)} | "
                             f"{_share(row['false_alarms_after'])} |")
    lines += ["", "## Conclusion", "", *conclusions(report)]
    return "\n".join(lines)
