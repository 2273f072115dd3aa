#!/usr/bin/env python3
"""Measures two per-round features live on a constant emulated link, one `ecspec generate --json`
per cell and prompt (both sides on this machine, the link in real time):

1. channel-aware verification: `--verify match|rejection|switch` at temperature 0.7 with a fixed
   draft length, over uplinks from 50 Mbit/s down to 16 kbit/s;
2. pipelined drafting: greedy, with and without `--pipeline-draft`, at two RTTs.

    scripts/round_features.py [--family qwen2.5-coder] [--max-tokens 64] [--prompts 2]

Prints two Markdown tables (mean goodput over the prompts, tokens/s, plus what explains it);
raw summaries go to --out as JSONL. About 20 minutes for the Qwen pair on 2 cores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Write a Rust function that returns the n-th Fibonacci number iteratively.",
    "Explain in two sentences what a hash map is.",
]


def run(a, out, extra, prompt):
    cmd = [a.bin, "generate", "--family", a.family, "--json", "--max-tokens", str(a.max_tokens), "--prompt", prompt, "--drafter", a.drafter] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{' '.join(extra)}: {r.stderr.strip()}", file=sys.stderr)
        return None
    s = json.loads(r.stdout)
    out.write(json.dumps({"args": extra, "prompt": prompt, "summary": s}) + "\n")
    return s


def mean(xs):
    return statistics.mean(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="qwen2.5-coder")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--drafter", default="model", help="ecspec generate --drafter (model: the draft model's policies alone, as BENCHMARKS.md measured them)")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ecspec"))
    ap.add_argument("--out", default="round_features.jsonl")
    a = ap.parse_args()
    prompts = PROMPTS[: a.prompts]
    with open(a.out, "w") as out:
        print("Channel-aware verification (temperature 0.7, fixed:4, RTT 20 ms):\n")
        print("| uplink | verify | goodput (tok/s) | acceptance | uplink B/token | rounds by rule |")
        print("|---|---|---|---|---|---|")
        for up in ("50", "0.05", "0.016"):
            for verify in ("match", "rejection", "switch"):
                extra = ["--temperature", "0.7", "--seed", "3", "--verify", verify, "--draft-len", "fixed:4", "--link-up-mbps", up, "--rtt-ms", "20"]
                ss = [s for s in (run(a, out, extra, p) for p in prompts) if s]
                rules = {}
                for s in ss:
                    for r in s["round_records"]:
                        rules[r["verify"]] = rules.get(r["verify"], 0) + 1
                rule_text = ", ".join(f"{k} {v}" for k, v in sorted(rules.items()))
                print(f"| {float(up) * 1000:g} kbit/s | {verify} | {mean([s['goodput_tok_s'] for s in ss]):.2f} | {mean([s['acceptance_rate'] for s in ss]):.3f} | {mean([s['uplink_bytes_per_token'] for s in ss]):.1f} | {rule_text} |", flush=True)
        print("\nPipelined drafting (greedy, 10 Mbit/s up):\n")
        print("| RTT | policy | pipelined | goodput (tok/s) | rounds | tokens reused | pre-drafting (s) | same tokens |")
        print("|---|---|---|---|---|---|---|---|")
        for rtt in ("60", "200"):
            for policy in ("fixed:4", "ecspec"):
                base = None
                for pipe in (False, True):
                    extra = ["--draft-len", policy, "--rtt-ms", rtt] + (["--pipeline-draft"] if pipe else [])
                    ss = [s for s in (run(a, out, extra, p) for p in prompts) if s]
                    toks = [s["tokens"] for s in ss]
                    if base is None:
                        base = toks
                    reused = sum(r["reused"] for s in ss for r in s["round_records"])
                    pre = sum(r["pre_draft_s"] for s in ss for r in s["round_records"])
                    print(f"| {rtt} ms | {policy} | {'yes' if pipe else 'no'} | {mean([s['goodput_tok_s'] for s in ss]):.2f} | {sum(s['rounds'] for s in ss)} | {reused} | {pre:.2f} | {'yes' if toks == base else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
