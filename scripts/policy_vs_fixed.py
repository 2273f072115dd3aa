#!/usr/bin/env python3
"""Goodput of the `ecspec` draft-length policy against every fixed K and cloud-only decoding,
on real link traces, live (the emulated link in real time): `ecspec generate --json` per
(trace, policy, prompt), prompt i starting the trace at i x --phase-s seconds. Cloud-only is
fixed K = 0. `ecspec (warm)` runs with `--edge-memory`: one unmeasured request first, then each
measured request starts from what the previous ones left, as on a device serving many requests.
Prints a Markdown table; raw summaries go to --out as JSONL.

    scripts/policy_vs_fixed.py [--family smollm2] [--max-tokens 48] [--prompts 3]

Traces come from $ECSPEC_DATA_DIR (default ../shared/data). Real time: about 10 minutes for
SmolLM2 on 2 cores, about 3x that for the Qwen pair.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a Python function that checks whether a number is prime.",
    "Give three short tips for staying focused while studying.",
    "What is 17 times 23? Show your steps.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="smollm2")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--phase-s", type=float, default=100.0, help="prompt i starts the link i x this many seconds into the trace")
    ap.add_argument("--drafter", default="model", help="ecspec generate --drafter (model: the draft model's policies alone, as BENCHMARKS.md measured them)")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ecspec"))
    ap.add_argument("--out", default="policy_vs_fixed.jsonl")
    a = ap.parse_args()
    data = os.environ.get("ECSPEC_DATA_DIR", "../shared/data")
    ch = os.path.join(data, "channel")
    mm = os.path.join(ch, "mahimahi", "us_cellular_2013_2016")
    irish = os.path.join(ch, "irish_5g_raca2020")
    traces = {
        "5G static (Irish, RTT from trace)": ["--link-csv", os.path.join(irish, "static", "B_2020.01.16_10.43.34.csv"), "--rtt-from-trace"],
        "5G driving (Irish, RTT from trace)": ["--link-csv", os.path.join(irish, "driving", "B_2019.12.16_14.23.32.csv"), "--rtt-from-trace"],
        "LTE driving (ATT, 60 ms)": ["--link-trace-up", os.path.join(mm, "ATT-LTE-driving.up"), "--link-trace-down", os.path.join(mm, "ATT-LTE-driving.down"), "--rtt-ms", "60"],
        "UMTS driving (T-Mobile, 100 ms)": ["--link-trace-up", os.path.join(mm, "TMobile-UMTS-driving.up"), "--link-trace-down", os.path.join(mm, "TMobile-UMTS-driving.down"), "--rtt-ms", "100"],
    }
    memory = os.path.abspath(a.out + ".edge-memory.json")
    policies = [("cloud-only", ["--mode", "cloud-only"])] + [
        (f"fixed:{k}", ["--draft-len", f"fixed:{k}"]) for k in (1, 2, 4, 8)
    ] + [("ecspec", ["--draft-len", "ecspec"]), ("ecspec (warm)", ["--draft-len", "ecspec", "--edge-memory", memory])]
    if not os.path.isdir(ch):
        print(f"skipped: no traces under {ch} (set ECSPEC_DATA_DIR)")
        return
    rows = {}
    with open(a.out, "w") as out:
        for tname, targs in traces.items():
            for pname, pargs in policies:
                goodputs = []
                if "--edge-memory" in pargs:
                    # A device that has served one request on this trace before (not measured):
                    # the edge starts each measured request from what the previous ones left.
                    if os.path.exists(memory):
                        os.remove(memory)
                    warm = [a.bin, "generate", "--family", a.family, "--json", "--max-tokens", str(a.max_tokens), "--prompt", PROMPTS[-1], "--drafter", a.drafter] + targs + pargs
                    subprocess.run(warm, capture_output=True, text=True)
                for i, prompt in enumerate(PROMPTS[: a.prompts]):
                    # Each prompt meets another phase of the trace; every policy the same ones.
                    phase = ["--link-start-s", str(i * a.phase_s)]
                    cmd = [a.bin, "generate", "--family", a.family, "--json", "--max-tokens", str(a.max_tokens), "--prompt", prompt, "--drafter", a.drafter] + targs + pargs + phase
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        print(f"{tname} / {pname}: {r.stderr.strip()}", file=sys.stderr)
                        continue
                    s = json.loads(r.stdout)
                    out.write(json.dumps({"trace": tname, "policy": pname, "prompt": prompt, "summary": s}) + "\n")
                    goodputs.append(s["goodput_tok_s"])
                rows[(tname, pname)] = statistics.mean(goodputs) if goodputs else float("nan")
                print(f"{tname} / {pname}: {rows[(tname, pname)]:.1f} tok/s", file=sys.stderr)
    names = [p for p, _ in policies]
    print(f"| trace | {' | '.join(names)} | ecspec vs best fixed K ≥ 1 | ecspec vs best fixed K ≥ 0 | warm ecspec vs best fixed K ≥ 0 |")
    print("|---|" + "---|" * (len(names) + 3))
    for tname in traces:
        g = [rows[(tname, p)] for p in names]
        best_fixed = max(rows[(tname, f"fixed:{k}")] for k in (1, 2, 4, 8))
        best_all = max(g[:-2])
        e = rows[(tname, "ecspec")]
        w = rows[(tname, "ecspec (warm)")]
        cells = " | ".join(f"{x:.1f}" for x in g)
        print(f"| {tname} | {cells} | {100 * (e / best_fixed - 1):+.0f}% | {100 * (e / best_all - 1):+.1f}% | {100 * (w / best_all - 1):+.1f}% |")


if __name__ == "__main__":
    main()
