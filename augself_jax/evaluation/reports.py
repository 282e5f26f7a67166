"""Results: records (one per number) -> results.json, results.md; the delta table of two runs."""

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


def markdown_table(records: Sequence[dict]) -> str:
    """The table a paper would show: one row per (dataset, protocol, metric)."""
    head = records[0] if records else {}
    lines = [f"Checkpoint step {head.get('step', '?')}, config {head.get('config_hash', '?')}",
             "", "| dataset | protocol | metric | value | regularisation |",
             "|---|---|---|---:|---|"]
    for r in records:
        lines.append(f"| {r['dataset']} | {r['protocol']} | {r['metric']} | {_fmt(r)} | "
                     f"{_reg(r)} |")
    return "\n".join(lines)


def _key(r: dict) -> tuple[str, str, str]:
    return r["dataset"], r["protocol"], r["metric"]


def compare_table(a: Sequence[dict], b: Sequence[dict], name_a: str = "A",
                  name_b: str = "B") -> str:
    """Rows present in both runs: value in each and the delta B - A (+ = B better marked)."""
    bmap = {_key(r): r for r in b}
    lines = [f"| dataset | protocol | metric | {name_a} | {name_b} | delta |",
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
    return "\n".join(lines)
