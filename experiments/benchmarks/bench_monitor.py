"""Production monitors benchmark: false alarms without drift, detection delay under real drift, recertification.

On SpamAssassin (``experiments/configs/spamassassin.yaml``: TF-IDF LR on 200 labels, Platt calibrator on
the fit part, confidence policy fitted there) one rule is certified with the project's tuner: a *joint*
budget, accepted answers at most ``α = 0.03`` wrong *and* at most ``β`` (the config's rate target, 0.2)
deferred, with probability ``1 - δ`` (``δ = 0.05``, Learn-then-Test over the fit part's grid). The served
app's own watch (:class:`policies.watch.CertificateWatch`, what the Serve app's holder runs) watches it with
the three monitors of :mod:`policies.monitors`, each at ``δ_monitor / 3`` (Bonferroni: the chance that
*any* of them raises a false alarm is at most ``δ_monitor = 0.05``):

* risk: :class:`~policies.monitors.BoundedMeanMonitor` at ``α`` on the 0/1 error of accepted requests
  whose label comes back (a random ``--label-rate`` of all requests, independent of the decision);
* rate: :class:`~policies.monitors.RateMonitor` at ``β`` on every request's deferral indicator;
* exchangeability: :class:`~policies.monitors.ExchangeabilityMonitor` fitted on the certify part's deferral
  scores, fed every served score.

The data are the 1,813 mails nothing was fitted on (the config's certify part and its test split); every
stream is one deployment: a fresh random certify part (as large as the config's; 600 of the 893
easy-ham-1 + spam-1 mails for "later collection") and the rest as traffic. Learn-then-Test's grid stays
the fit part's.

* Without drift (``--streams``): the rule is certified on the stream's certify part and the other 1,209
  mails are served in random order, so the certify part followed by the traffic is exchangeable. A false
  alarm is an alarm of a monitor whose null holds on the served traffic (for risk and rate: the rule's
  accepted error / deferral rate over those 1,209 mails at most ``α`` / ``β``; exchangeability: always).
  Traffic is drawn without replacement (the risk and rate monitors assume independent draws; sampling a
  finite population without replacement makes running means concentrate faster, not slower).
* Drift (``--drift-streams`` per scenario): ``PREFIX`` requests drawn without replacement from the mails of
  the certified population that were not certified on, then ``HORIZON`` requests drawn *with replacement*
  from the drifted population (too few hard-ham mails to do without: 73 in the pool). Scenarios: "hard ham
  arrives" (30 % of the traffic from the hard-ham-1 group, about 4 % before; the other groups keep their
  ratios), the same at 15 %, and "later collection" (certified on, and first served, easy-ham-1 + spam-1
  only; then easy-ham-2 + spam-2, which the detector did see in training, so only the population the rule
  was certified on changes). Delay: the number of drifted requests up to and including the one whose
  arrival (or label) raised the alarm; for the risk monitor also in labels. Whether the guarantee breaks
  is read on the drifted *population* (each group's mails weighted by the mixture, exact) and on the
  requests served.
* Recertification: at the first alarm after the switch the next ``N`` labelled drifted requests (each ``N``
  of ``--recertify``; fresh draws from the drifted population, never used for fitting; about
  ``N / label_rate`` requests are served by the old rule meanwhile) become a new certify part; the same
  joint tuner, and an accepted-error budget at the same ``α`` without the rate bound, certify again (a
  refused target keeps nothing). The new rule's accepted error on the drifted population is compared with
  ``α`` over the streams, and with the old rule's; then ``AFTER`` further requests are served with freshly
  started monitors (the exchangeability reference is the new certify part), whose alarms are false ones
  where the new certificate holds.

Writes ``experiments/benchmarks/results/monitor.{json,md}``; about half a minute on 2 cores.

    python -m experiments.benchmarks.bench_monitor [--streams 1000] [--drift-streams 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.config import CascadeConfig
from experiments.benchmarks.monitor_report import markdown
from experiments.benchmarks.monitor_streams import (AFTER, ALPHA, CONFIG, DELTA_CERTIFICATE, DELTA_MONITOR, HORIZON,
                                                    MONITORS, PREFIX, RESULTS, ROOT, SCENARIOS, Pool, Scenario, delay,
                                                    delay_summary, drift_weights, first_alarm, group_shares,
                                                    mean_p_value, population_risk, rate_interval, request_of_label,
                                                    split_delta)
from experiments.benchmarks.results_io import write_results
from policies import make_policy, make_tuner, tie_keys
from policies.certificate import WITH_PROBABILITY, Certificate
from policies.watch import CertificateWatch, Observation
from policies.tuners import BudgetTuner, budget_grid


def watch(pool: Pool, requests: np.ndarray, rule: tuple[float, float], reference: np.ndarray,
          labelled: np.ndarray, beta: float | None, delta: float, seed: int) -> dict[str, Any]:
    """Serve ``requests`` with ``rule`` under fresh monitors; alarms as request indices (1-based), the risk
    monitor's also in labels, and what was served."""
    defer = pool.defer(requests, rule)
    wrong = ~pool.correct[requests]
    fed = np.flatnonzero(labelled & ~defer)
    scores = pool.scores[requests]
    target = {"accepted_error": ALPHA, **({"defer_rate": beta} if beta is not None else {})}
    certificate = Certificate(kind="joint" if beta is not None else "accepted-error", method="benchmark",
                              threshold=rule[0], target=target, achieved={}, bound=target, guarantee=WITH_PROBABILITY,
                              statement="benchmark", n=len(reference), delta=None)
    # the served watch itself (policies.watch): its monitors, its δ split, fed as the keeper feeds it
    served = CertificateWatch(certificate, reference, delta=delta * len(target) + delta, seed=seed)
    served.observe([Observation(float(s), bool(d), 0.0) for s, d in zip(scores, defer)]
                   + [Observation(float(scores[i]), False, 0.0, labelled=True, accepted_wrong=bool(wrong[i]))
                      for i in fed])
    monitors = served.monitors
    alarms = {"risk": request_of_label(fed, monitors["accepted_error"].alarm_at_),
              "exchangeability": monitors["exchangeability"].alarm_at_}
    if beta is not None:
        alarms["rate"] = monitors["defer_rate"].alarm_at_
    return {"alarms": alarms, "risk_labels": monitors["accepted_error"].alarm_at_, "defer": defer, "wrong": wrong,
            "fed": fed}


def certify(tuner: BudgetTuner, pool: Pool, rows: np.ndarray) -> list[tuple[float, float] | None]:
    """The tuner's rule certified on each row of pool indices (one certify part per row); None where refused."""
    cut = tuner.fit_cuts(pool.scores[rows], pool.correct[rows], None, pool.keys[rows])
    return [None if np.isnan(threshold) else (float(threshold), float(tie_break))
            for threshold, tie_break in zip(cut.threshold, cut.tie_break, strict=True)]


def served_error(served: dict[str, Any], since: int = 0) -> float:
    """Accepted error over the requests served from position ``since`` on."""
    accepted = ~served["defer"][since:]
    return float((served["wrong"][since:] & accepted).sum() / max(accepted.sum(), 1))


def load(config: CascadeConfig) -> tuple[Pool, dict[str, BudgetTuner], int, dict[str, Any]]:
    """The pool (the config's certify part first, then its test split), the tuners, the config's certify
    size and facts about the small tier."""
    from cascade.data.roles import load_roles
    from cascade.scoring import score_small
    from cascade.small import fit_small_tier

    roles = load_roles(config)
    small_tier, _ = fit_small_tier(config, roles)
    seed = config.budget.tie_seed or 0
    fit = score_small(small_tier, roles.fit, config.cost.small_per_call)
    policy = make_policy("confidence", n_classes=small_tier.n_classes)
    policy.fit(fit.features, fit.correct, fit.correct)
    fit_scores, fit_keys = policy.score(fit.features), tie_keys(roles.fit.X, seed)
    parts = [roles.certify, roles.test]
    scored = [score_small(small_tier, part, config.cost.small_per_call) for part in parts]
    pool = Pool(np.concatenate([policy.score(part.features) for part in scored]),
                np.concatenate([part.correct for part in scored]),
                np.concatenate([tie_keys(part.X, seed) for part in parts]),
                np.concatenate([part.groups for part in parts]).astype(str))
    budgets = {"joint": config.budget.as_kind("joint", target=ALPHA, max_rate=config.budget.target,
                                              delta=DELTA_CERTIFICATE),
               "accepted-error": config.budget.as_kind("accepted-error", target=ALPHA, delta=DELTA_CERTIFICATE)}
    tuners = {name: make_tuner(budget, config.cost, config.expert.max_model_len,
                               budget_grid(budget, fit_scores, fit_keys)) for name, budget in budgets.items()}
    groups = np.unique(pool.groups)
    facts = {"train_labels": config.dataset.label_budget, "fit": len(roles.fit), "pool": len(pool),
             "pool_accuracy": float(pool.correct.mean()),
             "accuracy_by_group": {str(g): float(pool.correct[pool.groups == g].mean()) for g in groups},
             "mails_by_group": {str(g): int((pool.groups == g).sum()) for g in groups}}
    return pool, tuners, len(roles.certify), facts


def headline_certificate(tuner: BudgetTuner, pool: Pool, size: int) -> dict[str, Any]:
    """The joint certificate on the config's own certify part (the first ``size`` pool mails)."""
    certificate = tuner.fit(pool.scores[:size], pool.correct[:size], tie_keys=pool.keys[:size]).certificate_
    return {"threshold": certificate.threshold, "target": certificate.target, "achieved": certificate.achieved,
            "bound": certificate.bound, "n": certificate.n, "delta": certificate.delta,
            "statement": certificate.statement, "method": certificate.method}


def null_block(pool: Pool, tuner: BudgetTuner, beta: float, size: int, streams: int, label_rate: float,
               delta: float, seed: int) -> dict[str, Any]:
    """Streams without drift: a fresh certify part per stream, the rest of the pool served in random order."""
    orders = np.stack([np.random.default_rng((seed, 0, s)).permutation(len(pool)) for s in range(streams)])
    rules = certify(tuner, pool, orders[:, :size])
    alarms = {name: 0 for name in MONITORS}
    nulls = {name: 0 for name in MONITORS}
    any_false, true_alarms, rates, errors = 0, 0, [], []
    for s, rule in enumerate(rules):
        if rule is None:
            continue
        rng = np.random.default_rng((seed, 1, s))
        requests = orders[s, size:]
        served = watch(pool, requests, rule, pool.scores[orders[s, :size]], rng.random(len(requests)) < label_rate,
                       beta, delta, seed=s)
        rate, error = float(served["defer"].mean()), served_error(served)
        rates.append(rate)
        errors.append(error)
        holds = {"risk": error <= ALPHA, "rate": rate <= beta, "exchangeability": True}
        false = False
        for name in MONITORS:
            nulls[name] += holds[name]
            raised = served["alarms"][name] is not None
            alarms[name] += raised and holds[name]
            true_alarms += raised and not holds[name]
            false |= raised and holds[name]
        any_false += false
    certified = len(rates)
    return {
        "streams": streams, "certified": certified, "refused": streams - certified, "stream_length": len(pool) - size,
        "false_alarms": {name: rate_interval(alarms[name], nulls[name]) for name in MONITORS},
        "any_false_alarm": rate_interval(any_false, certified),
        "alarms_where_certificate_failed": true_alarms,
        "certificate_held": {"risk": nulls["risk"] / max(certified, 1), "rate": nulls["rate"] / max(certified, 1)},
        "defer_rate_mean": float(np.mean(rates)) if rates else None,
        "accepted_error_mean": float(np.mean(errors)) if errors else None,
        "accepted_error_max": float(np.max(errors)) if errors else None,
    }


def drift_block(pool: Pool, tuners: dict[str, BudgetTuner], beta: float, scenario: Scenario, default_size: int,
                streams: int, label_rate: float, delta: float, recertify: Sequence[int], seed: int, block: int
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One drift scenario: detection per monitor, whether the guarantee breaks, and recertification."""
    certified_population = (np.ones(len(pool), dtype=bool) if scenario.certify_groups is None
                            else np.isin(pool.groups, scenario.certify_groups))
    eligible = np.flatnonzero(certified_population)
    size = scenario.certify_size or default_size
    if size + PREFIX > len(eligible):
        raise ValueError(f"{scenario.name}: {len(eligible)} mails cannot give a certify part of {size} and "
                         f"{PREFIX} undrifted requests")
    orders = np.stack([np.random.default_rng((seed, block, s)).permutation(eligible) for s in range(streams)])
    rules = certify(tuners["joint"], pool, orders[:, :size])
    delays: dict[str, list[int | None]] = {name: [] for name in (*MONITORS, "any")}
    label_delays: list[int | None] = []
    early = {name: 0 for name in (*MONITORS, "any")}
    before, after, served_after, shares, p_values = [], [], [], [], []
    while_held = {name: 0 for name in MONITORS}
    triggered: list[dict[str, Any]] = []
    drifted = (np.ones(len(pool), dtype=bool) if scenario.drift_groups is None
               else np.isin(pool.groups, scenario.drift_groups))
    for s, rule in enumerate(rules):
        if rule is None:
            continue
        rng = np.random.default_rng((seed, block, 10**6 + s))
        in_certify = np.zeros(len(pool), dtype=bool)
        in_certify[orders[s, :size]] = True
        weights = drift_weights(pool.groups, drifted & ~in_certify, scenario.enrich, scenario.share)
        shares.append(group_shares(pool.groups, weights))
        p_values.append(mean_p_value(pool.scores[orders[s, :size]], pool.scores, weights))
        requests = np.concatenate([orders[s, size:size + PREFIX], rng.choice(len(pool), HORIZON, p=weights)])
        labelled = rng.random(len(requests)) < label_rate
        served = watch(pool, requests, rule, pool.scores[orders[s, :size]], labelled, beta, delta, seed=s)
        trigger = first_alarm(served["alarms"], after=PREFIX)
        for name, at in served["alarms"].items():
            delays[name].append(delay(at, PREFIX))
            early[name] += at is not None and at <= PREFIX
        delays["any"].append(delay(trigger, PREFIX))
        early["any"] += any(at is not None and at <= PREFIX for at in served["alarms"].values())
        labels_before = int((served["fed"] < PREFIX).sum())
        label_delays.append(delay(served["risk_labels"], labels_before))
        defer_all = pool.defer(np.arange(len(pool)), rule)
        prefix_weights = (certified_population & ~in_certify) / (certified_population & ~in_certify).sum()
        before.append(population_risk(defer_all, pool.correct, prefix_weights))
        after.append(population_risk(defer_all, pool.correct, weights))
        held = {"risk": after[-1][1] <= ALPHA, "rate": after[-1][0] <= beta, "exchangeability": False}
        for name in MONITORS:
            while_held[name] += held[name] and delays[name][-1] is not None
        served_after.append(served_error(served, PREFIX))
        if trigger is not None:
            triggered.append({"stream": s, "rule": rule, "weights": weights, "defer_all": defer_all,
                              "certify": rng.choice(len(pool), max(recertify), p=weights),
                              "after": rng.choice(len(pool), AFTER, p=weights),
                              "labelled": rng.random(AFTER) < label_rate})
    certified = len(before)
    before_error = np.array([error for _, error in before])
    after_rate, after_error = np.array(after).T if after else (np.array([]), np.array([]))
    detection = {
        "scenario": scenario.description, "streams": streams, "certified": certified,
        "refused": streams - certified, "prefix": PREFIX, "horizon": HORIZON,
        "drifted_group_shares": {group: float(np.mean([share[group] for share in shares]))
                                 for group in (shares[0] if shares else {})},
        "drifted_mean_p_value": float(np.mean(p_values)) if p_values else None,
        **{key: value for key, value in delay_summary(delays["any"]).items() if key != "streams"},
        "monitors": {name: {**delay_summary(delays[name]), "alarms_before_switch": early[name],
                            "alarms_while_claim_held": while_held[name]} for name in MONITORS},
        "risk_label_delay": delay_summary(label_delays),
        "alarms_before_switch": early["any"],
        "before_drift": {"accepted_error_mean": float(before_error.mean()) if certified else None,
                         "defer_rate_mean": float(np.mean([rate for rate, _ in before])) if certified else None},
        "detection_rate_where_broken": (float(np.mean([d is not None for d, e in zip(delays["any"], after_error)
                                                       if e > ALPHA])) if (after_error > ALPHA).any() else None),
        "after_drift": {
            "accepted_error_mean": float(after_error.mean()) if certified else None,
            "accepted_error_served_mean": float(np.mean(served_after)) if certified else None,
            "defer_rate_mean": float(after_rate.mean()) if certified else None,
            "guarantee_broken": float((after_error > ALPHA).mean()) if certified else None,
            "rate_bound_broken": float((after_rate > beta).mean()) if certified else None,
        },
    }
    return detection, recertification(pool, tuners, beta, triggered, label_rate, delta, recertify, certified)


def recertification(pool: Pool, tuners: dict[str, BudgetTuner], beta: float, triggered: list[dict[str, Any]],
                    label_rate: float, delta: float, recertify: Sequence[int], certified: int) -> dict[str, Any]:
    """Recertify each alarmed stream with each tuner on its first ``N`` fresh drifted labels, for each ``N`` in
    ``recertify``; compare with keeping the old rule."""
    report: dict[str, Any] = {"streams": certified, "triggered": len(triggered), "after": AFTER}
    if not triggered:
        return report
    old = np.array([population_risk(t["defer_all"], pool.correct, t["weights"]) for t in triggered])
    old_served = [served_error({"defer": pool.defer(t["after"], t["rule"]), "wrong": ~pool.correct[t["after"]]})
                  for t in triggered]
    report["old_rule"] = {"accepted_error_mean": float(old[:, 1].mean()), "holds": float((old[:, 1] <= ALPHA).mean()),
                          "defer_rate_mean": float(old[:, 0].mean()),
                          "accepted_error_served_mean": float(np.mean(old_served))}
    report["by_labels"] = {
        str(labels): {"requests_until_recertified": labels / label_rate,
                      **{name: recertified(pool, tuner, beta if name == "joint" else None, triggered, labels, delta)
                         for name, tuner in tuners.items()}}
        for labels in recertify}
    return report


def recertified(pool: Pool, tuner: BudgetTuner, beta: float | None, triggered: list[dict[str, Any]], labels: int,
                delta: float) -> dict[str, Any]:
    """One tuner certified on the first ``labels`` fresh drifted labels of each alarmed stream, then served
    ``AFTER`` requests under fresh monitors (no rate monitor without a certified rate, ``beta`` None)."""
    rows = np.stack([t["certify"][:labels] for t in triggered])
    risks, served_errors, post_alarms, post_nulls = [], [], 0, 0
    for t, rule in zip(triggered, certify(tuner, pool, rows), strict=True):
        if rule is None:
            continue
        rate, error = population_risk(pool.defer(np.arange(len(pool)), rule), pool.correct, t["weights"])
        risks.append((rate, error))
        served = watch(pool, t["after"], rule, pool.scores[t["certify"][:labels]], t["labelled"], beta, delta,
                       seed=t["stream"])
        served_errors.append(served_error(served))
        holds = error <= ALPHA and (beta is None or rate <= beta)
        post_nulls += holds
        post_alarms += holds and first_alarm(served["alarms"]) is not None
    kept = np.array(risks).reshape(-1, 2)
    violated = (kept[:, 1] > ALPHA) | (kept[:, 0] > beta if beta is not None else False)
    return {
        "certified": len(risks), "refused": len(triggered) - len(risks),
        "refused_rate": (len(triggered) - len(risks)) / len(triggered),
        "violated": int(violated.sum()), "violated_rate": float(violated.sum() / len(triggered)),
        "accepted_error_mean": float(kept[:, 1].mean()) if len(risks) else None,
        "holds": float((kept[:, 1] <= ALPHA).mean()) if len(risks) else None,
        "defer_rate_mean": float(kept[:, 0].mean()) if len(risks) else None,
        "accepted_error_served_mean": float(np.mean(served_errors)) if risks else None,
        "false_alarms_after": rate_interval(post_alarms, post_nulls),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="streams without drift")
    parser.add_argument("--drift-streams", type=int, default=200, help="streams per drift scenario")
    parser.add_argument("--label-rate", type=float, default=0.5, help="share of requests whose label comes back")
    parser.add_argument("--recertify", type=int, nargs="+", default=[300, 600],
                        help="labelled drifted requests that recertify (each size is tried)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from cascade.logs import library_logs

    started = time.perf_counter()
    config = CascadeConfig.from_yaml(CONFIG)
    beta, delta = config.budget.target, split_delta(DELTA_MONITOR, len(MONITORS))
    with library_logs("bench_monitor") as terminal:
        pool, tuners, size, facts = load(config)
        certificate = headline_certificate(tuners["joint"], pool, size)
        null = null_block(pool, tuners["joint"], beta, size, args.streams, args.label_rate, delta, args.seed)
        print(f"without drift: any false alarm {null['any_false_alarm']['rate']:.3f} "
              f"({time.perf_counter() - started:.0f} s)", file=terminal, flush=True)
        drift, recert = {}, {}
        for block, scenario in enumerate(SCENARIOS, start=2):
            drift[scenario.name], recert[scenario.name] = drift_block(
                pool, tuners, beta, scenario, size, args.drift_streams, args.label_rate, delta, args.recertify,
                args.seed, block)
            print(f"{scenario.name}: detected {drift[scenario.name]['detection_rate']:.2f}, median delay "
                  f"{drift[scenario.name]['median_delay']} ({time.perf_counter() - started:.0f} s)",
                  file=terminal, flush=True)
    report: dict[str, Any] = {
        "config": str(CONFIG.relative_to(ROOT)), "seed": args.seed, "small_tier": facts,
        "alpha": ALPHA, "max_rate": beta, "delta_certificate": DELTA_CERTIFICATE,
        "delta_monitor": DELTA_MONITOR, "delta_per_monitor": delta,
        "monitor_split": "Bonferroni: each of the three monitors at delta_monitor / 3",
        "label_rate": args.label_rate, "certificate": certificate,
        "streams_without_drift": null["certified"],
        "false_alarm_rate": null["any_false_alarm"]["rate"],
        "false_alarm_rate_per_monitor": {name: null["false_alarms"][name]["rate"] for name in MONITORS},
        "null": null, "drift": drift, "recertification": recert,
        "seconds": time.perf_counter() - started,
    }
    write_results(args.out, "monitor", report, markdown)
    print(json.dumps({key: report[key] for key in ("false_alarm_rate", "false_alarm_rate_per_monitor", "seconds")},
                     indent=2))
    return report


if __name__ == "__main__":
    main()
