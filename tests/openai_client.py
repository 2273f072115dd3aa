#!/usr/bin/env python3
"""The official `openai` Python client against `ecspec edge serve`.

    python tests/openai_client.py http://127.0.0.1:8000/v1 [--prompt TEXT] [--max-tokens N]

Checks, in order (each names its letter when it fails):

  (a) a chat completion at temperature 0;
  (b) the same streamed: the deltas concatenate to (a)'s text, the first carries the role,
      one chunk has the finish_reason, and with stream_options.include_usage the last chunk
      has no choices and (a)'s usage;
  (c) a stop string (taken from the middle of (a)'s text, across a chunk boundary of (b)): the
      answer is (a)'s text cut before its first occurrence, streamed and not, finish_reason
      "stop";
  (d) seeds: temperature 1 with seed 7 gives the same text twice, and streamed;
  (e) bad requests: temperature 5 is a BadRequestError (400) naming `temperature`, also
      streamed; an unknown model is a NotFoundError (404) naming `model`;
  (f) /v1/completions at temperature 0, plain and streamed (same text);
  (g) usage is filled in (prompt_tokens > 0, completion_tokens the budget when the answer
      ran out of it, total the sum) and the `ecspec` extension carries rounds,
      acceptance_rate and the link bytes.

Prints what it got as one JSON object on stdout (texts, usages, the stop string) so that a
caller can compare them with `ecspec generate`. Exits 1 with the failed check on stderr.
"""

import argparse
import json
import sys
import traceback

try:
    import openai
except ImportError:
    print("openai_client.py: the `openai` package is not installed (pip install openai)", file=sys.stderr)
    sys.exit(2)


class CheckFailed(Exception):
    pass


def check(cond, what, *detail):
    if not cond:
        raise CheckFailed(what + ("".join(f"\n    {d}" for d in detail) if detail else ""))


def extension(obj, what):
    """The `ecspec` extension object the client keeps as an extra field."""
    ext = (obj.model_extra or {}).get("ecspec")
    check(isinstance(ext, dict), f"{what}: the response has no `ecspec` extension object", f"extra fields: {obj.model_extra!r}")
    for key in ("rounds", "acceptance_rate", "uplink_bytes", "downlink_bytes", "drafted_tokens", "accepted_tokens"):
        check(key in ext, f"{what}: the `ecspec` extension lacks `{key}`", f"ecspec: {ext!r}")
    check(isinstance(ext["rounds"], int) and ext["rounds"] >= 1, f"{what}: ecspec.rounds = {ext['rounds']!r}, expected an integer >= 1")
    rate = ext["acceptance_rate"]
    check(isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0, f"{what}: ecspec.acceptance_rate = {rate!r}, expected a number in [0, 1]")
    check(isinstance(ext["uplink_bytes"], int) and ext["uplink_bytes"] > 0, f"{what}: ecspec.uplink_bytes = {ext['uplink_bytes']!r}, expected > 0")
    check(isinstance(ext["downlink_bytes"], int) and ext["downlink_bytes"] > 0, f"{what}: ecspec.downlink_bytes = {ext['downlink_bytes']!r}, expected > 0")
    return ext


def usage_of(u, what, finish_reason, max_tokens):
    check(u is not None, f"{what}: no usage")
    check(u.prompt_tokens > 0, f"{what}: usage.prompt_tokens = {u.prompt_tokens}, expected > 0")
    check(u.completion_tokens > 0, f"{what}: usage.completion_tokens = {u.completion_tokens}, expected > 0")
    check(u.completion_tokens <= max_tokens, f"{what}: usage.completion_tokens = {u.completion_tokens} is over max_tokens {max_tokens}")
    if finish_reason == "length":
        check(u.completion_tokens == max_tokens, f"{what}: finish_reason length but usage.completion_tokens = {u.completion_tokens}, not max_tokens {max_tokens}")
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"{what}: usage.total_tokens = {u.total_tokens}, not {u.prompt_tokens} + {u.completion_tokens}")
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def stream_chat(client, what, **kw):
    """A streamed chat completion: (text, finish_reason, usage chunk or None, deltas)."""
    deltas, finishes, usage_chunks, n = [], [], [], 0
    include_usage = bool(kw.get("stream_options", {}).get("include_usage"))
    for chunk in client.chat.completions.create(stream=True, **kw):
        check(chunk.object == "chat.completion.chunk", f"{what}: chunk object {chunk.object!r}")
        check(not usage_chunks, f"{what}: a chunk after the usage chunk: {chunk!r}")
        if not chunk.choices:
            check(chunk.usage is not None, f"{what}: a chunk with neither choices nor usage: {chunk!r}")
            usage_chunks.append(chunk)
            continue
        check(chunk.usage is None, f"{what}: a content chunk with a usage: {chunk!r}")
        check(len(chunk.choices) == 1, f"{what}: {len(chunk.choices)} choices in one chunk")
        choice = chunk.choices[0]
        if n == 0:
            check(choice.delta.role == "assistant", f"{what}: the first delta's role is {choice.delta.role!r}, not 'assistant'")
        n += 1
        if choice.delta.content:
            check(not finishes, f"{what}: content after the finish_reason: {choice.delta.content!r}")
            deltas.append(choice.delta.content)
        if choice.finish_reason is not None:
            finishes.append(choice.finish_reason)
    check(len(finishes) == 1, f"{what}: {len(finishes)} chunks with a finish_reason, expected 1: {finishes!r}")
    check(len(usage_chunks) == (1 if include_usage else 0), f"{what}: {len(usage_chunks)} usage chunks with include_usage={include_usage}")
    return "".join(deltas), finishes[0], (usage_chunks[0] if usage_chunks else None), deltas


def pick_stop(text, deltas):
    """A stop string from the middle of `text` that straddles a chunk boundary of the streamed
    answer (so streaming must hold back its first half), occurring first after the start."""
    bounds, pos = [], 0
    for d in deltas[:-1]:
        pos += len(d)
        bounds.append(pos)
    mid = len(text) // 2
    near = sorted(bounds, key=lambda b: abs(b - mid))
    # Best: its first occurrence is the one across the boundary; else any after the start.
    for first in (True, False):
        for b in near:
            for before, after in ((3, 3), (2, 2), (1, 2), (2, 1), (1, 1)):
                s = text[b - before:b + after]
                if len(s) != before + after or not s.strip():
                    continue
                at = text.index(s)
                if (at == b - before) if first else (at > 0):
                    return s
    # Too short to have a boundary in the middle: any non-blank substring after the start.
    for i in range(max(1, mid), len(text)):
        s = text[i:i + 2]
        if s.strip() and text.index(s) > 0:
            return s
    raise CheckFailed(f"(c) no usable stop string in (a)'s text {text!r}: ask for more tokens")


def run(base_url, prompt, completion_prompt, max_tokens):
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    out = {"base_url": base_url, "prompt": prompt, "completion_prompt": completion_prompt, "max_tokens": max_tokens}

    models = client.models.list().data
    check(len(models) >= 1, "/v1/models lists no model")
    model = models[0].id
    out["model"] = model
    messages = [{"role": "user", "content": prompt}]
    chat = dict(model=model, messages=messages, max_tokens=max_tokens)

    # (a) plain, temperature 0
    r = client.chat.completions.create(temperature=0, **chat)
    check(r.object == "chat.completion", f"(a) object {r.object!r}")
    check(len(r.choices) == 1, f"(a) {len(r.choices)} choices")
    a_text = r.choices[0].message.content
    a_finish = r.choices[0].finish_reason
    check(isinstance(a_text, str) and a_text, f"(a) empty content: {r!r}")
    check(r.choices[0].message.role == "assistant", f"(a) role {r.choices[0].message.role!r}")
    check(a_finish in ("stop", "length"), f"(a) finish_reason {a_finish!r}")
    check(r.model == model, f"(a) model {r.model!r}, asked for {model!r}")
    # (g) usage and the extension
    a_usage = usage_of(r.usage, "(g) plain chat", a_finish, max_tokens)
    a_ext = extension(r, "(g) plain chat")
    out["plain"] = {"text": a_text, "finish_reason": a_finish, "usage": a_usage, "ecspec": a_ext}

    # (b) streamed, with the usage chunk
    b_text, b_finish, b_usage_chunk, deltas = stream_chat(
        client, "(b) streamed chat", temperature=0, stream_options={"include_usage": True}, **chat)
    check(b_text == a_text, "(b) the streamed deltas differ from the plain answer", f"streamed: {b_text!r}", f"plain:    {a_text!r}")
    check(b_finish == a_finish, f"(b) streamed finish_reason {b_finish!r}, plain {a_finish!r}")
    b_usage = usage_of(b_usage_chunk.usage, "(b) streamed usage chunk", b_finish, max_tokens)
    check(b_usage == a_usage, f"(b) streamed usage {b_usage} differs from the plain one {a_usage}")
    extension(b_usage_chunk, "(b) streamed usage chunk")
    out["streamed"] = {"text": b_text, "finish_reason": b_finish, "usage": b_usage, "chunks": len(deltas)}

    # (c) stop strings, plain (as a list, with one that never occurs) and streamed (a string)
    stop = pick_stop(a_text, deltas)
    want = a_text[:a_text.index(stop)]
    r = client.chat.completions.create(temperature=0, stop=[stop, "\u2603 never \u2603"], **chat)
    c_text, c_finish = r.choices[0].message.content, r.choices[0].finish_reason
    check(c_text == want, f"(c) with stop {stop!r} the answer is not (a)'s text cut before it", f"got:  {c_text!r}", f"want: {want!r}")
    check(c_finish == "stop", f"(c) finish_reason {c_finish!r} with stop {stop!r}, expected 'stop'")
    c_usage = usage_of(r.usage, "(c) stop", c_finish, max_tokens)
    check(c_usage["completion_tokens"] <= a_usage["completion_tokens"], f"(c) more tokens with a stop string ({c_usage}) than without ({a_usage})")
    cs_text, cs_finish, _, _ = stream_chat(client, "(c) streamed stop", temperature=0, stop=stop, **chat)
    check(cs_text == want, f"(c) streamed with stop {stop!r}: not (a)'s text cut before it", f"got:  {cs_text!r}", f"want: {want!r}")
    check(cs_finish == "stop", f"(c) streamed finish_reason {cs_finish!r} with stop {stop!r}, expected 'stop'")
    out["stop"] = {"stop": stop, "text": c_text, "streamed_text": cs_text, "finish_reason": c_finish, "usage": c_usage}

    # (d) seeds: temperature 1, seed 7, twice and streamed
    d1 = client.chat.completions.create(temperature=1, seed=7, **chat)
    d2 = client.chat.completions.create(temperature=1, seed=7, **chat)
    t1, t2 = d1.choices[0].message.content, d2.choices[0].message.content
    check(t1 == t2, "(d) temperature 1 with seed 7 gave two different texts", f"first:  {t1!r}", f"second: {t2!r}")
    ds_text, _, _, _ = stream_chat(client, "(d) streamed seed", temperature=1, seed=7, **chat)
    check(ds_text == t1, "(d) streamed with seed 7 differs from the plain answer", f"streamed: {ds_text!r}", f"plain:    {t1!r}")
    d_usage = usage_of(d1.usage, "(d) seeded", d1.choices[0].finish_reason, max_tokens)
    out["seeded"] = {"seed": 7, "temperature": 1, "text": t1, "finish_reason": d1.choices[0].finish_reason, "usage": d_usage}

    # (e) bad requests: OpenAI's error shape, the field named
    errors = {}
    for what, kw, exc, status, param in (
        ("temperature 5", dict(chat, temperature=5), openai.BadRequestError, 400, "temperature"),
        ("temperature 5 streamed", dict(chat, temperature=5, stream=True), openai.BadRequestError, 400, "temperature"),
        ("unknown model", dict(chat, model="no-such-model"), openai.NotFoundError, 404, "model"),
    ):
        try:
            got = client.chat.completions.create(**kw)
            if kw.get("stream"):
                list(got)
        except exc as e:
            body = e.body if isinstance(e.body, dict) else {}
            check(e.status_code == status, f"(e) {what}: status {e.status_code}, expected {status}")
            check(body.get("param") == param, f"(e) {what}: error param {body.get('param')!r}, expected {param!r}", f"body: {e.body!r}")
            check(isinstance(body.get("message"), str) and body["message"], f"(e) {what}: no error message", f"body: {e.body!r}")
            check(isinstance(body.get("type"), str) and body["type"], f"(e) {what}: no error type", f"body: {e.body!r}")
            check("code" in body, f"(e) {what}: the error body has no `code`", f"body: {e.body!r}")
            check(e.param == param, f"(e) {what}: the exception's param is {e.param!r}, expected {param!r}")
            errors[what] = {"status": e.status_code, "error": body}
        except openai.APIStatusError as e:
            raise CheckFailed(f"(e) {what}: {type(e).__name__} ({e.status_code}), expected {exc.__name__} ({status}): {e.body!r}")
        else:
            raise CheckFailed(f"(e) {what}: the request succeeded, expected {exc.__name__} ({status})")
    out["errors"] = errors

    # (f) /v1/completions, plain and streamed
    comp = dict(model=model, prompt=completion_prompt, max_tokens=max_tokens, temperature=0)
    r = client.completions.create(**comp)
    check(r.object == "text_completion", f"(f) object {r.object!r}")
    f_text, f_finish = r.choices[0].text, r.choices[0].finish_reason
    check(isinstance(f_text, str) and f_text, f"(f) empty completion: {r!r}")
    check(f_finish in ("stop", "length"), f"(f) finish_reason {f_finish!r}")
    f_usage = usage_of(r.usage, "(g) completion", f_finish, max_tokens)
    extension(r, "(g) completion")
    parts, f_finishes = [], []
    for chunk in client.completions.create(stream=True, **comp):
        for choice in chunk.choices:
            parts.append(choice.text or "")
            if choice.finish_reason is not None:
                f_finishes.append(choice.finish_reason)
    fs_text = "".join(parts)
    check(fs_text == f_text, "(f) streamed completion differs from the plain one", f"streamed: {fs_text!r}", f"plain:    {f_text!r}")
    check(f_finishes == [f_finish], f"(f) streamed finish_reasons {f_finishes!r}, plain {f_finish!r}")
    out["completion"] = {"text": f_text, "finish_reason": f_finish, "usage": f_usage}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_url", help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--prompt", default="Write a short poem about the sea.", help="the chat prompt")
    p.add_argument("--completion-prompt", default="The three primary colors are", help="the /v1/completions prompt")
    p.add_argument("--max-tokens", type=int, default=48)
    args = p.parse_args()
    try:
        out = run(args.base_url, args.prompt, args.completion_prompt, args.max_tokens)
    except CheckFailed as e:
        print(f"openai_client.py: FAILED {e}", file=sys.stderr)
        sys.exit(1)
    except openai.APIError as e:
        traceback.print_exc()
        print(f"openai_client.py: FAILED: the server answered an unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 — any other failure is a failed run, with its traceback
        traceback.print_exc()
        print(f"openai_client.py: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    print()
    print(f"openai_client.py: all checks passed against {args.base_url} (model {out['model']})", file=sys.stderr)


if __name__ == "__main__":
    main()
