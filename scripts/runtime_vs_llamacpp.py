#!/usr/bin/env python3
"""ECSpec's model runtime against llama.cpp on the same GGUF files, side by side in one run.

For each model of the families (SmolLM2-135M; Qwen2.5-Coder-1.5B and 0.5B) and each thread
count, measures with both runtimes, alternating, on this machine:

- prefill: tokens/s over a 128-token prompt from an empty context;
- decode: tokens/s of one-token steps after a 128-token context;
- verification of a drafted block: the time of one forward pass over K + 1 positions after a
  160-token context, K = 1, 4, 8, 16 (what the cloud pays per speculative round).

ECSpec: `ecspec --threads T profile --family F --json` (medians of --repeats).
llama.cpp: `llama-bench -t T -r R -o json` with `-p 128 -n 0`, `-p 0 -n 32 -d 128` and
`-p K+1 -n 0 -d 160` (means of R repetitions; llama-bench prints the mean and its standard
deviation).

llama.cpp is built by this script, never committed: the llama-cpp-python sdist from PyPI
(which vendors llama.cpp) is fetched with pip, its SHA-256 checked, and the vendored tree is
built with CMake (`llama-bench` only, GGML_NATIVE=ON, CPU). cmake and ninja come from PyPI
into a virtual environment in the cache. Everything lives in $ECSPEC_CACHE_DIR/llamacpp
(default ~/.cache/ecspec/llamacpp); the first build takes about 10-15 minutes on 2 cores.

    scripts/runtime_vs_llamacpp.py [--ecspec target/release/ecspec] [--threads 1,2] [--repeats 3]

Prints a Markdown table; --json FILE also writes the raw measurements. Keep the machine
otherwise idle while it runs: both runtimes are timed in real time.
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

LLAMA_CPP_PYTHON = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
FAMILIES = {
    "smollm2": ["smollm2-135m-instruct"],
    "qwen2.5-coder": ["qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"],
}
KS = [1, 4, 8, 16]


def cache_dir():
    base = os.environ.get("ECSPEC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "ecspec"
    )
    return pathlib.Path(base) / "llamacpp"


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_llama_bench():
    """Fetches, checks and builds llama-bench; returns its path."""
    root = cache_dir() / LLAMA_CPP_PYTHON
    binary = root / "build" / "bin" / "llama-bench"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.exists():
        # Only the sdist: its build dependencies (cmake, ninja) come as wheels.
        run([sys.executable, "-m", "pip", "download", "--no-deps",
             "--no-binary", "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
             "-d", str(root)])
    got = sha256(sdist)
    if got != SDIST_SHA256:
        sys.exit(f"{sdist}: sha256 {got}, expected {SDIST_SHA256}; delete it and rerun")
    src = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    if not src.exists():
        with tarfile.open(sdist) as t:
            t.extractall(root, filter="data")
    tree = src / "vendor" / "llama.cpp"
    venv = root / "venv"
    if not (venv / "bin" / "cmake").exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", "cmake", "ninja"])
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}")
    build = root / "build"
    run([str(venv / "bin" / "cmake"), "-S", str(tree), "-B", str(build), "-G", "Ninja",
         "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
         "-DBUILD_SHARED_LIBS=OFF"], env=env)
    jobs = str(os.cpu_count() or 1)
    run([str(venv / "bin" / "cmake"), "--build", str(build), "-j", jobs,
         "--target", "llama-bench"], env=env)
    return binary


def model_files(ecspec):
    """Registry name -> cached GGUF path, from `ecspec models list`."""
    out = subprocess.run([ecspec, "models", "list"], check=True, capture_output=True,
                         text=True).stdout
    files = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-2] == "cached":
            files[parts[0]] = parts[-1]
    return files


def llama(bench, model, threads, repeats, args):
    out = run([str(bench), "-m", model, "-t", str(threads), "-r", str(repeats), "-o", "json",
               *args], capture_output=True, text=True).stdout
    return json.loads(out)


def measure_llama(bench, model, threads, repeats):
    pp = llama(bench, model, threads, repeats, ["-p", "128", "-n", "0"])[0]
    tg = llama(bench, model, threads, repeats, ["-p", "0", "-n", "32", "-d", "128"])[0]
    blocks = llama(bench, model, threads, repeats,
                   ["-p", ",".join(str(k + 1) for k in KS), "-n", "0", "-d", "160"])
    verify = {}
    for b in blocks:
        k = b["n_prompt"] - 1
        verify[k] = b["avg_ns"] / 1e6
    return {
        "prefill_tok_s": pp["avg_ts"], "prefill_sd": pp["stddev_ts"],
        "decode_tok_s": tg["avg_ts"], "decode_sd": tg["stddev_ts"],
        "verify_ms": verify,
    }


def measure_ecspec(ecspec, family, threads, repeats):
    out = run([ecspec, "--threads", str(threads), "profile", "--family", family, "--json",
               "--repeats", str(repeats)], capture_output=True, text=True).stdout
    res = {}
    for p in json.loads(out):
        res[p["model"]] = {
            "prefill_tok_s": p["prefill_tok_s"], "decode_tok_s": p["decode_tok_s"],
            "verify_ms": {v["k"]: v["block_ms"] for v in p["verify"]},
        }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ecspec", default="target/release/ecspec")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", default="smollm2,qwen2.5-coder")
    ap.add_argument("--json", help="write the raw measurements here")
    a = ap.parse_args()
    if not shutil.which(a.ecspec) and not os.path.exists(a.ecspec):
        sys.exit(f"{a.ecspec} not found: build it with `cargo build --release` or pass --ecspec")
    bench = build_llama_bench()
    version = subprocess.run([str(bench), "--version"], capture_output=True,
                             text=True).stderr.strip().splitlines()
    files = model_files(a.ecspec)
    rows = []
    for fam in a.families.split(","):
        for t in [int(x) for x in a.threads.split(",")]:
            ours = measure_ecspec(a.ecspec, fam, t, a.repeats)
            for name in FAMILIES[fam]:
                if name not in files:
                    sys.exit(f"{name} is not cached: run `{a.ecspec} models fetch {name}`")
                theirs = measure_llama(bench, files[name], t, a.repeats)
                rows.append({"model": name, "threads": t, "ecspec": ours[name],
                             "llama.cpp": theirs})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"llama_cpp": version, "rows": rows}, f, indent=1)
    print(f"llama.cpp: llama-cpp-python {LLAMA_CPP_PYTHON} sdist, "
          f"{' '.join(version) or 'version unknown'}\n")
    head = ["model", "threads", "prefill tok/s (ECSpec / llama.cpp)",
            "decode tok/s (ECSpec / llama.cpp)"] + \
           [f"verify K = {k}, ms (ECSpec / llama.cpp)" for k in KS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        o, l = r["ecspec"], r["llama.cpp"]
        cells = [r["model"], str(r["threads"]),
                 f"{o['prefill_tok_s']:.0f} / {l['prefill_tok_s']:.0f} ± {l['prefill_sd']:.0f}",
                 f"{o['decode_tok_s']:.1f} / {l['decode_tok_s']:.1f} ± {l['decode_sd']:.1f}"]
        for k in KS:
            cells.append(f"{o['verify_ms'][k]:.1f} / {l['verify_ms'][k]:.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
