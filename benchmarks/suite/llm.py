"""The `llm` benchmark: `fermion serve hf:` with continuous batching against raw `generate`, in one run.

The model is a randomly initialised GPT-2 (n_embd 512, 8 layers, 8 heads, the tests' byte-level
BPE): built here, so no download. Requests ask for 34 to 94 new tokens (`LENGTHS`, 64 on average)
at temperature 0 through the OpenAI chat endpoint, streamed (the first content chunk gives the time
to first token). Each of the 16 clients keeps one length: were they all alike, the clients would
fall into step (requests that join together finish together, and their clients come back
together), and the run would measure that lockstep rather than the scheduler. Raw `generate`
makes 64 tokens per row.

- raw `model.generate` in a process of its own, batch 1 and batch 16 (left-padded): the limits,
  run before and after the servers' loads (the record keeps both; the table their mean);
- Fermion at 1 stream and at 16 concurrent streams (closed loop, starts staggered over one
  request's duration, as in a steady state); every server is up at once and the 1-stream cases
  take turns in `ROUNDS` rounds, so the machine's drift touches them alike;
- the serial engine this replaces, served from `--baseline` (a git commit; `git archive`), same loads;
- `transformers serve --continuous-batching` on the same model and CPUs, same loads (its own
  environment, `benchmarks/.venvs/hfserve`, adds `accelerate`, which it needs on CPU);
- greedy outputs of Fermion at 16 streams compared with raw batch-1 `generate` (cut to each
  request's length), text for text.

    python benchmarks/run.py --only llm [--quick]
    python benchmarks/suite/llm.py raw MODEL_DIR      # (what the suite runs for the raw numbers)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NEW_TOKENS = 64
STREAMS = 16
#: New tokens asked by the n-th request of a load: client i of 16 always asks LENGTHS[i] (the mean is NEW_TOKENS).
LENGTHS = [34 + 4 * i for i in range(STREAMS)]
#: Each 1-stream case's window is cut into this many turns, taken in turn with the other servers' (see `_measure`).
ROUNDS = 4
#: The last commit with the serial (turn-taking) engine: "today's" numbers come from it.
BASELINE_COMMIT = "7574e88"
PROMPTS = [f"Tell me about {topic}." for topic in ("the sea", "HTTP", "tokens", "foxes", "numbers", "streams", "models", "dogs")]


def build_model(folder: Path) -> Path:
    """The 25.6 M-parameter GPT-2-style model of the issue, saved with the tests' tokenizer and chat template."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models.llm import EOS, build_tokenizer

    if (folder / "config.json").exists():
        return folder
    tokenizer = build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids(EOS)
    shape = {"n_positions": 512, "n_embd": 512, "n_layer": 8, "n_head": 8}
    special = {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}
    config = GPT2Config(vocab_size=len(tokenizer), tie_word_embeddings=False, **shape, **special)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def raw(model_dir: str) -> dict[str, Any]:
    """Raw `generate` tokens/s at batch 1 and 16 (2 torch threads), and each prompt's greedy answer alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS
    ]
    out: dict[str, Any] = {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "tokens_per_s": {}}
    options = {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    with torch.inference_mode():
        for batch in (1, STREAMS):
            chosen = [texts[i % len(texts)] for i in range(batch)]
            inputs = tokenizer(chosen, return_tensors="pt", padding=True, add_special_tokens=False)
            model.generate(**inputs, **options)  # warm-up
            times = []
            for _ in range(3):  # the median of three: one call is at the mercy of a noisy moment
                started = time.perf_counter()
                model.generate(**inputs, **options)
                times.append(time.perf_counter() - started)
            out["tokens_per_s"][str(batch)] = round(batch * NEW_TOKENS / sorted(times)[1], 1)
        answers = {}
        for prompt, text in zip(PROMPTS, texts, strict=True):
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            generated = model.generate(**ids, max_new_tokens=max(LENGTHS), do_sample=False, pad_token_id=tokenizer.pad_token_id)
            new = generated[0, ids["input_ids"].shape[1] :]
            for length in LENGTHS:
                answers[_answer_key(prompt, length)] = tokenizer.decode(new[:length], skip_special_tokens=True)
    out["greedy_answers"] = answers
    return out


def _answer_key(prompt: str, max_tokens: int) -> str:
    return f"{prompt} ({max_tokens} tokens)"


async def _one(client: Any, url: str, prompt: str, max_tokens: int = NEW_TOKENS) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    first, text, tokens = None, [], 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as answer:
        answer.raise_for_status()
        async for line in answer.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
    ttft = (first or time.perf_counter()) - started
    return {"ttft": ttft, "tokens": tokens, "text": "".join(text), "key": _answer_key(prompt, max_tokens)}


async def _run(url: str, streams: int, seconds: float) -> tuple[list[dict[str, Any]], float]:
    """`streams` clients in a closed loop for `seconds` (starts staggered): every request's result, and the time taken."""
    import httpx

    done: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=streams)) as client:
        solo = await _one(client, url, PROMPTS[0])  # warm-up, and how long one request takes
        stagger = (solo["ttft"] + 0.5 * NEW_TOKENS / max(solo["tokens"], 1)) / streams if streams > 1 else 0.0
        started = time.perf_counter()

        async def run(i: int) -> None:
            await asyncio.sleep(i * stagger)
            n = i
            while time.perf_counter() - started < seconds:
                done.append(await _one(client, url, PROMPTS[n % len(PROMPTS)], LENGTHS[n % len(LENGTHS)]))
                n += streams

        await asyncio.gather(*(run(i) for i in range(streams)))
        return done, time.perf_counter() - started


def _summary(streams: int, runs: list[tuple[list[dict[str, Any]], float]]) -> dict[str, Any]:
    """One case over its rounds: tokens/s, p50 TTFT, requests, and each (prompt, length)'s answer."""
    done = [r for results, _ in runs for r in results]
    elapsed = sum(seconds for _, seconds in runs)
    ttfts = sorted(r["ttft"] for r in done)
    return {
        "streams": streams,
        "requests": len(done),
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(sum(r["tokens"] for r in done) / elapsed, 1),
        "p50_ttft_ms": round(1000 * ttfts[len(ttfts) // 2], 1),
        "answers": {r["key"]: r["text"] for r in done},
    }


def _serve(model_dir: Path, python_path: str, log: Path) -> tuple[Any, str]:
    """`fermion serve hf:MODEL` from the checkout at `python_path`, on CPUs 0 and 1; (process, url) once ready."""
    from suite.procs import free_port, start

    port = free_port()
    cmd = [sys.executable, "-m", "fermion", "serve", f"hf:{model_dir}", "--port", str(port), "--compute-threads", "2"]
    # cwd is the checkout served: `python -m` puts it first on sys.path, ahead of PYTHONPATH
    env = {"PYTHONPATH": python_path, "HF_HUB_OFFLINE": "1"}
    proc = start("llm", cmd, cpus="0,1", log_path=log, cwd=Path(python_path), env=env)
    return _ready(proc, f"http://127.0.0.1:{port}", "/readyz")


def _serve_transformers(model_dir: Path, python: Path, log: Path) -> tuple[Any, str]:
    """`transformers serve MODEL --continuous-batching` on CPUs 0 and 1; (process, url) once ready."""
    from suite.procs import free_port, start

    port = free_port()
    cmd = [str(python), "-m", "transformers.cli.transformers", "serve", str(model_dir), "--continuous-batching"]
    cmd += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = start("transformers-serve", cmd, cpus="0,1", log_path=log, cwd=ROOT, env={"HF_HUB_OFFLINE": "1"})
    return _ready(proc, f"http://127.0.0.1:{port}", "/health")


def _ready(proc: Any, url: str, path: str) -> tuple[Any, str]:
    """(process, url) once `GET url+path` answers 200; else the process is stopped and NotReady says why."""
    import httpx

    from suite.procs import wait_ready

    try:
        wait_ready([proc], lambda: httpx.get(url + path, timeout=2).status_code == 200, 300, interval=0.2)
    except BaseException:
        proc.stop()
        raise
    return proc, url


def _measure(servers: dict[str, str], seconds: float, say: Any) -> dict[str, dict[str, Any]]:
    """Every server (name: url) at 1 stream, then at 16, each case `seconds` long in all.

    The 1-stream cases take turns in `ROUNDS` rounds, so a machine whose speed drifts over minutes
    (this one does, by 10-20 %) slows them alike instead of whichever ran last; each round starts
    with the next server, so none always follows the same one. The 16-stream cases
    run whole, one after another: each turn would add a ramp and a drain to their count.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in servers}
    for load, streams, rounds in (("single", 1, ROUNDS), ("concurrent", STREAMS, 1)):
        runs: dict[str, list[tuple[list[dict[str, Any]], float]]] = {name: [] for name in servers}
        names = list(servers)
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:  # each round starts with the next server
                runs[name].append(asyncio.run(_run(servers[name], streams, seconds / rounds)))
        for name in servers:
            found = out[name][load] = _summary(streams, runs[name])
            say(f"    {name}, {streams} stream(s): {found['tokens_per_s']} tok/s, p50 TTFT {found['p50_ttft_ms']} ms")
    return out


def _raw(model_dir: Path) -> dict[str, Any]:
    """`raw()` in a process of its own on CPUs 0 and 1."""
    done = subprocess.run(
        ["taskset", "-c", "0,1", sys.executable, __file__, "raw", str(model_dir)], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode:
        raise RuntimeError(f"raw generate failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_llm(quick: bool, log_dir: Path, say: Any, baseline: str = BASELINE_COMMIT) -> dict[str, Any]:
    """The whole `llm` benchmark; returns the record run.py writes."""
    from suite.machine import load_average, machine_info

    seconds = 15.0 if quick else 40.0
    record: dict[str, Any] = {"bench": "llm", "quick": quick, "machine": machine_info(), "new_tokens": NEW_TOKENS}
    record["method"] = {"window_s": seconds, "server_cpus": "0,1", "streams": STREAMS, "baseline": baseline}
    record["method"].update(lengths=LENGTHS, rounds=ROUNDS)
    model_dir = build_model(ROOT / "benchmarks" / ".venvs" / "llm-gpt2-25m")
    say("  raw generate (batch 1, batch 16), before the servers' loads")
    before = _raw(model_dir)
    started: dict[str, Any] = {}  # name: (process, url)
    skipped: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as old:
        try:
            started["fermion"] = _serve(model_dir, str(ROOT), log_dir / "llm-fermion.log")
            archive = subprocess.run(["git", "archive", baseline, "fermion"], cwd=ROOT, capture_output=True, check=False)
            if archive.returncode == 0:
                subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
                started["serial"] = _serve(model_dir, old, log_dir / "llm-serial.log")
            else:
                skipped["serial"] = {"skipped": f"git archive {baseline} failed: {archive.stderr.decode()[-300:]}"}
            theirs = _start_transformers(model_dir, log_dir, say)
            if "skipped" in theirs:
                skipped["transformers_serve"] = theirs
            else:
                started["transformers_serve"] = theirs.pop("started")
            say(f"  {', '.join(started)}: 1 stream in {ROUNDS} turns of {seconds / ROUNDS:g} s each, then {STREAMS} streams")
            record.update(_measure({name: url for name, (_, url) in started.items()}, seconds, say))
        finally:
            for proc, _ in started.values():
                proc.stop()
    record.update(skipped)
    if "transformers_serve" in started:
        record["transformers_serve"]["versions"] = theirs["versions"]
    say("  raw generate again, after them")
    after = _raw(model_dir)
    rates = {k: round((before["tokens_per_s"][k] + after["tokens_per_s"][k]) / 2, 1) for k in before["tokens_per_s"]}
    record["raw"] = {"parameters_m": before["parameters_m"], "tokens_per_s": rates}
    record["raw"]["runs"] = [before["tokens_per_s"], after["tokens_per_s"]]
    say(f"    {record['raw']['tokens_per_s']} tok/s, the mean of {record['raw']['runs']}")
    expected = before["greedy_answers"]
    served = record["fermion"]["concurrent"]["answers"]
    record["greedy_mismatches"] = sorted(p for p, text in served.items() if text != expected[p])
    if "transformers_serve" in started:
        answers = record["transformers_serve"]["concurrent"]["answers"]
        record["transformers_serve"]["greedy_mismatches"] = sorted(p for p, t in answers.items() if t != expected[p])
    record["load_average_after"] = load_average()
    return record


def _start_transformers(model_dir: Path, log_dir: Path, say: Any) -> dict[str, Any]:
    """`transformers serve` started ({"started": (process, url), "versions": ...}), or why not ({"skipped": ...})."""
    from suite.envs import EnvError, ensure_env, versions

    try:
        python = ensure_env("hfserve", log_dir / "install-hfserve.log").python
        started = _serve_transformers(model_dir, python, log_dir / "llm-transformers.log")
    except (EnvError, RuntimeError) as exc:
        say(f"    transformers serve not measured: {exc}")
        return {"skipped": str(exc)[:500]}
    return {"started": started, "versions": versions(python, ["transformers", "accelerate"])}


if __name__ == "__main__":
    if sys.argv[1:2] == ["raw"]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print(json.dumps(raw(sys.argv[2])))
