"""Results: records (one per number) -> results.json, results.md; the delta table of two runs.

Each evaluated checkpoint keeps its own files, WORKDIR/eval/step_<N>/results.{json,md} (its
figures and --save_features files beside them); an evaluation of a step already evaluated
with the same config replaces only the numbers it recomputes. WORKDIR/eval/results.{json,md}
are a copy of the latest evaluation's step files: what --compare reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import ml_collections
from etils import epath

from augself_jax.errors import ConfigError

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
# Metrics where lower is better (the others are accuracies, R^2, similarities in percent).
LOWER_IS_BETTER = ("hue_err_deg", "hue_median_err_deg")


def config_hash(config: ml_collections.ConfigDict) -> str:
    """12 hex digits of the pretraining config (everything but the `eval` section and paths),
    so two evaluations of the same run share it whatever their eval options."""
    d = json.loads(config.to_json_best_effort(sort_keys=True))
    d.pop("eval", None)
    d.get("data", {}).pop("data_dir", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def record(dataset: str, protocol: str, metric: str, value: float, *, unit: str = "%",
           **extra) -> dict:
    """One number. `extra`: regularisation, step, config_hash, split sizes, val_seed, ci95..."""
    return {"dataset": dataset, "protocol": protocol, "metric": metric,
            "value": round(float(value), 4), "unit": unit, **extra}


def step_dir(eval_dir: str, step: int) -> str:
    """Where the evaluation of checkpoint `step` keeps its results, figures and features."""
    return str(epath.Path(eval_dir) / f"step_{int(step)}")


def merge_records(earlier: Sequence[dict], new: Sequence[dict]) -> tuple[list[dict], int]:
    """The new records, then the earlier ones of the same checkpoint and config that the new
    do not recompute (a kNN-only rerun keeps the linear numbers); returns (records, how many
    earlier records were kept). Earlier records of another config are dropped."""
    if not new:
        return list(earlier), len(earlier)
    same = {(r.get("step"), r.get("config_hash")) for r in new}
    recomputed = {_key(r) for r in new}
    kept = [r for r in earlier
            if (r.get("step"), r.get("config_hash")) in same and _key(r) not in recomputed]
    return [*new, *kept], len(kept)


def save_step_results(records: Sequence[dict], eval_dir: str, step: int
                      ) -> tuple[list[dict], str, int]:
    """Merges `records` into eval_dir/step_<step>/results.{json,md} (merge_records) and copies
    them to eval_dir/results.{json,md} as the latest. Returns (the step's records, its
    results.json path, how many earlier records were kept)."""
    directory = step_dir(eval_dir, step)
    earlier_path = epath.Path(directory) / RESULTS_JSON
    earlier = json.loads(earlier_path.read_text()) if earlier_path.exists() else []
    merged, kept = merge_records(earlier, records)
    json_path, _ = write_results(merged, directory)
    write_results(merged, eval_dir)
    return merged, json_path, kept


def write_results(records: Sequence[dict], eval_dir: str) -> tuple[str, str]:
    """Through epath, so that a gs:// workdir keeps them (os.makedirs("gs://b") would make a
    local ./gs:/b that dies with the VM)."""
    directory = epath.Path(eval_dir)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / RESULTS_JSON
    json_path.write_text(json.dumps(list(records), indent=1))
    md_path = directory / RESULTS_MD
    md_path.write_text(markdown_table(records) + "\n")
    return str(json_path), str(md_path)


def load_results(workdir: str) -> list[dict]:
    path = epath.Path(workdir) / "eval" / RESULTS_JSON
    if not path.exists():
        raise ConfigError(f"compare: no results in {path}; run evaluate.py on that workdir first")
    return json.loads(path.read_text())


def _fmt(r: dict) -> str:
    s = f"{r['value']:.2f}"
    if "ci95" in r:
        s += f" ± {r['ci95']:.2f}"
    return s + ("°" if r.get("unit") == "deg" else "")


def _reg(r: dict) -> str:
    for k in ("l2", "ridge_penalty", "c"):
        if k in r:
            return f"{k}={r[k]:.3g}"
    return ""


def checkpoint_label(record: dict) -> str:
    """'Checkpoint step 40' plus how it was chosen when that was --step best."""
    label = f"Checkpoint step {record.get('step', '?')}"
    if record.get("checkpoint") == "best":
        label += " (--step best: the checkpoint of the best kNN-monitor accuracy)"
    return label


def markdown_table(records: Sequence[dict]) -> str:
    """The table a paper would show: one row per (dataset, protocol, metric)."""
    head = records[0] if records else {}
    lines = [f"{checkpoint_label(head)}, config {head.get('config_hash', '?')}",
             "", "| dataset | protocol | metric | value | regularisation |",
             "|---|---|---|---:|---|"]
    for r in records:
        lines.append(f"| {r['dataset']} | {r['protocol']} | {r['metric']} | {_fmt(r)} | "
                     f"{_reg(r)} |")
    return "\n".join(lines)


def _key(r: dict) -> tuple[str, str, str]:
    return r["dataset"], r["protocol"], r["metric"]


def _row_names(records: Sequence[dict]) -> str:
    return ", ".join(" ".join(_key(r)) for r in records)


def compare_table(a: Sequence[dict], b: Sequence[dict], name_a: str = "A",
                  name_b: str = "B") -> str:
    """Rows present in both runs: value in each and the delta B - A (↑: B is better); then
    the rows found in only one run, named, so that nothing is dropped silently."""
    bmap = {_key(r): r for r in b}
    akeys = {_key(r) for r in a}
    lines = [f"delta = B - A, A = {name_a} ({checkpoint_label(a[0]) if a else 'no results'}), "
             f"B = {name_b} ({checkpoint_label(b[0]) if b else 'no results'}); "
             "↑ marks B better (lower is better for errors in degrees)", "",
             f"| dataset | protocol | metric | {name_a} | {name_b} | delta |",
             "|---|---|---|---:|---:|---:|"]
    for r in a:
        other = bmap.get(_key(r))
        if other is None:
            continue
        delta = other["value"] - r["value"]
        better = (delta < 0) if r["metric"] in LOWER_IS_BETTER else (delta > 0)
        mark = " ↑" if better and abs(delta) > 1e-9 else ""
        lines.append(f"| {r['dataset']} | {r['protocol']} | {r['metric']} | {_fmt(r)} | "
                     f"{_fmt(other)} | {delta:+.2f}{mark} |")
    for name, only in ((name_a, [r for r in a if _key(r) not in bmap]),
                       (name_b, [r for r in b if _key(r) not in akeys])):
        if only:
            lines += ["", f"only in {name} ({len(only)} rows, not compared): {_row_names(only)}"]
    return "\n".join(lines)
