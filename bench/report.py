"""Renders bench/results/*.json into the generated section of docs/BENCHMARKS.md and plots
in docs/img/. Run by bench/run.sh after a harness run; can be re-run on its own:

    .venv-bench/bin/python bench/report.py bench/results/small-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"
IMG = ROOT / "docs" / "img"
BEGIN, END = "<!-- harness:begin -->", "<!-- harness:end -->"


def fmt(x, digits=1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def section(r: dict, name: str) -> str:
    out = [f"### {r['scale']} — {r['docs']:,} documents, {r['dim']}-d vectors, {r['partitions']} partitions "
           f"(run {r['started_at']}, `{name}`)", ""]
    ing = r["ingest"]
    out += [f"**Ingest**: {ing['records']:,} records to ready in {ing['seconds_to_ready']:.1f} s = "
            f"**{ing['records_per_s']:,.0f} records/s**; resident memory {ing['rss_bytes'] / 2**20:,.0f} MiB = "
            f"{ing['rss_bytes_per_doc'] / 1024:.1f} KiB per document.", ""]
    rc = r["recall"]
    out += [f"**Recall@10** (HNSW vs exact, {rc['queries']} queries, M={rc['hnsw']['m']}, "
            f"ef_construction={rc['hnsw']['ef_construction']}, ef_search={rc['hnsw']['ef_search']}): "
            f"**{rc['recall_at_10']:.3f}**", ""]
    out += ["**Query latency** over MCP HTTP (ms; `search`, k = 10):", "",
            "| mode | clients | ingesting/s | p50 | p99 | queries/s |", "|---|---|---|---|---|---|"]
    for lat in r["latency"]:
        out.append(f"| {lat['mode']} | {lat['clients']} | {lat['ingesting_per_s']:.0f} | {fmt(lat.get('p50'), 2)} | "
                   f"{fmt(lat.get('p99'), 2)} | {lat['qps']:.0f} |")
    out += ["", "**Freshness**, produce → searchable (ms): polling `get_document` (sample), the "
            "`index_delay_ms` stamps (all records), and a plain librdkafka consumer on the same topic "
            "(`fetch.wait.max.ms=10`) as the transport floor:", "",
            "| rate/s (achieved) | measure | n | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|---|"]
    for fr in r["freshness"]:
        for label, key in (("polled get_document", "polled_get_document_ms"),
                           ("index_delay_ms stamps", "stamp_index_delay_ms"),
                           ("plain consumer floor", "plain_consumer_floor_ms")):
            p = fr[key]
            out.append(f"| {fr['rate']} ({fr['achieved_rate']:.0f}) | {label} | {p.get('n', 0)} | {fmt(p.get('p50'))} | "
                       f"{fmt(p.get('p95'))} | {fmt(p.get('p99'))} | {fmt(p.get('max'))} |")
    out.append("")
    return "\n".join(out)


def plot(r: dict, stem: str) -> list[str]:
    IMG.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels, p50, p99 = [], [], []
    for lat in r["latency"]:
        labels.append(f"{lat['mode']}\nx{lat['clients']}{' +ing' if lat['ingesting_per_s'] else ''}")
        p50.append(lat.get("p50", 0))
        p99.append(lat.get("p99", 0))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax.set_xticks(list(xs), labels, fontsize=6)
    ax.set_ylabel("ms")
    ax.set_title(f"search latency over MCP HTTP, {r['docs']:,} docs")
    ax.legend()
    fig.tight_layout()
    path = IMG / f"{stem}-latency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(path.name)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    rates = [fr["rate"] for fr in r["freshness"]]
    for label, key in (("polled get_document", "polled_get_document_ms"),
                       ("stamps", "stamp_index_delay_ms"),
                       ("plain consumer", "plain_consumer_floor_ms")):
        ax.plot(rates, [fr[key].get("p99", 0) for fr in r["freshness"]], marker="o", label=f"{label} p99")
        ax.plot(rates, [fr[key].get("p50", 0) for fr in r["freshness"]], marker=".", linestyle="--",
                label=f"{label} p50")
    ax.set_xscale("log")
    ax.set_xlabel("records/s")
    ax.set_ylabel("ms")
    ax.set_title("produce → searchable")
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = IMG / f"{stem}-freshness.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(path.name)
    return files


def main(paths: list[str]) -> int:
    parts = []
    for p in sorted(paths):
        path = Path(p)
        r = json.loads(path.read_text())
        stem = path.stem
        imgs = plot(r, stem)
        parts.append(section(r, f"bench/results/{path.name}") + "\n" +
                     "\n".join(f"![{i}](img/{i})" for i in imgs) + "\n")
    generated = "\n".join(parts)
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{generated}\n{END}{tail}")
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
