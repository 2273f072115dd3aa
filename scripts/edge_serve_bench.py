#!/usr/bin/env python3
"""Concurrent streamed chat requests against a running `ecspec edge serve` (standard library
only): per concurrency level, every request's TTFT and TPOT from its server-sent events and
the level's total output tokens per second.

    ecspec edge serve --listen 127.0.0.1:8000 &
    scripts/edge_serve_bench.py --url http://127.0.0.1:8000 --levels 1,2,4,8 --max-tokens 64

Each level sends N requests at once (prompts cycled from a fixed list) and waits for all; the
report is one JSON line per level: n, p50/max TTFT (s), p50/max TPOT (s), output tok/s, and the
`ecspec` numbers summed (rounds, drafted, accepted)."""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Give three tips for sleeping well.",
    "Explain TCP slow start in one sentence.",
    "Name a prime number larger than 100.",
    "Describe a cat to someone who has never seen one.",
    "What does a compiler do?",
    "Write one sentence about autumn.",
]


def one(url, model, prompt, max_tokens, out):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out.append({"error": resp.status, "body": resp.read().decode()})
        return
    first = last = None
    usage = ext = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        v = json.loads(data)
        if v.get("choices") and v["choices"][0].get("delta", {}).get("content"):
            now = time.monotonic()
            first = first or now
            last = now
        if v.get("usage"):
            usage, ext = v["usage"], v.get("ecspec", {})
    n = usage["completion_tokens"]
    out.append({
        "ttft_s": (first or time.monotonic()) - t0,
        "tpot_s": ((last - first) / (n - 1)) if first and n > 1 else 0.0,
        "tokens": n,
        "end_s": time.monotonic(),
        "rounds": ext.get("rounds", 0),
        "drafted": ext.get("drafted_tokens", 0),
        "accepted": ext.get("accepted_tokens", 0),
    })


def level(url, model, n, max_tokens):
    out = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(url, model, PROMPTS[i % len(PROMPTS)], max_tokens, out))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in out if "error" in r]
    if errors:
        return {"n": n, "errors": errors}
    wall = max(r["end_s"] for r in out) - t0
    ttft = [r["ttft_s"] for r in out]
    tpot = [r["tpot_s"] for r in out]
    return {
        "n": n,
        "ttft_p50_s": round(statistics.median(ttft), 3),
        "ttft_max_s": round(max(ttft), 3),
        "tpot_p50_s": round(statistics.median(tpot), 4),
        "tpot_max_s": round(max(tpot), 4),
        "output_tok_s": round(sum(r["tokens"] for r in out) / wall, 1),
        "rounds": sum(r["rounds"] for r in out),
        "drafted": sum(r["drafted"] for r in out),
        "accepted": sum(r["accepted"] for r in out),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--levels", default="1,2,4,8")
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args()
    for n in [int(x) for x in a.levels.split(",")]:
        print(json.dumps(level(a.url, a.model, n, a.max_tokens)), flush=True)


if __name__ == "__main__":
    main()
