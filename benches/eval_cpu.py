"""CPU benchmark of `validator eval` against transformers on the same machine, in one script.

    cargo build --release
    python3 benches/eval_cpu.py [--samples 300] [--threads 2] [--profile all] [-- FLAGS]

Needs a Python with torch and transformers (the reference engine). For each profile (a Llama
with the real 128k vocabulary, and a ~30M-parameter one with the fixture tokenizer's small
vocabulary, both f32) and a few hundred synthetic prompt/response pairs it measures, each
engine in its own process: tokens per second (ours: the whole `validator eval` process, load
and session build included; transformers: its evaluation loop alone), wall time and peak RSS,
also against the weights' size. Both engines get the same threads. It checks the two engines'
losses agree, then prints the ratios. FLAGS after `--` go to `validator eval`.
Last, it measures our session build time (export + ONNX Runtime session) against the size of
the safetensors file, for models of 2 to 16 layers.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "fixtures", "models", "tokenizer-llama3")
VALIDATOR = os.path.join(ROOT, "target", "release", "validator")

WORDS = (
    "the keeper counted shells by the lighthouse and wrote a story about the sea while the "
    "validator measured every model on prompts and responses with careful losses"
).split()


# The two shapes the CPU goal names: Llama 3's real 128,256-entry vocabulary (the LM head
# then costs more than the layers, as it does for small Llama 3 models), and a ~30M-parameter
# model whose vocabulary is the fixture tokenizer's own. Token ids always come from the fixture
# tokenizer; a larger vocabulary only widens the embedding and the head, which is the cost.
PROFILES = {
    "vocab128k": dict(vocab_size=128256, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                      num_attention_heads=12, num_key_value_heads=4),
    "small30m": dict(vocab_size=None, hidden_size=576, intermediate_size=1536, num_hidden_layers=8,
                     num_attention_heads=9, num_key_value_heads=3),
}


def make_model(path, layers=None, seed=0, profile="vocab128k"):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    shape = dict(PROFILES[profile])
    shape["vocab_size"] = shape["vocab_size"] or len(tokenizer)
    if layers is not None:
        shape["num_hidden_layers"] = layers
    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def make_data(path, count, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(count):
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80)))
            response = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 240)))
            f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")


def run_with_rss(command, env=None):
    """Runs a command: (stdout, wall seconds, peak RSS MiB), under GNU time where there is one;
    elsewhere the RSS is the largest of this script's children so far (resource's figure)."""
    timed = os.path.exists("/usr/bin/time")
    started = time.monotonic()
    result = subprocess.run((["/usr/bin/time", "-v"] if timed else []) + command, capture_output=True, env=env)
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed:\n{result.stderr.decode()[-2000:]}")
    if not timed:
        import resource

        return result.stdout.decode(), wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rss_kib = next(
        int(line.split(":")[1]) for line in result.stderr.decode().splitlines() if "Maximum resident set size" in line
    )
    return result.stdout.decode(), wall, rss_kib / 1024


REFERENCE_WORKER = r"""
import json, sys, time, torch
from transformers import AutoTokenizer, LlamaForCausalLM
model_dir, data, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
def ids(messages, generation):
    out = tokenizer.apply_chat_template(messages, truncation=True, max_length=2048, add_generation_prompt=generation, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)
batches = []
for line in open(data):
    s = json.loads(line)
    user = {"role": "user", "content": s["prompt"].strip()}
    assistant = {"role": "assistant", "content": s["response"].strip()}
    batches.append((ids([user], True), ids([user, assistant], False)))
losses, tokens = [], 0
started = time.monotonic()
with torch.inference_mode():
    for prompt, full in batches:
        inputs = torch.tensor([full]); labels = inputs.clone(); labels[:, :len(prompt)] = -100
        losses.append(model(inputs, labels=labels).loss.item()); tokens += len(full)
seconds = time.monotonic() - started
print(json.dumps({"losses": losses, "tokens": tokens, "seconds": seconds}))
"""


def compare(scratch, profile, data, args):
    """One profile: both engines on the same model and data; returns the figures."""
    model = os.path.join(scratch, profile)
    parameters = make_model(model, profile=profile)
    weights_mib = os.path.getsize(os.path.join(model, "model.safetensors")) / 2**20
    print(f"\n{profile}: {parameters / 1e6:.1f}M parameters, f32 ({weights_mib:.0f} MiB); "
          f"{args.samples} samples; {args.threads} threads")
    command = [VALIDATOR, "eval", "--json", "--model", model, "--data", data, "--threads", str(args.threads)]
    command += args.validator_args
    ours_out, ours_wall, ours_rss = run_with_rss(command)
    ours = json.loads(ours_out)
    # The whole process, load and session build included, against transformers' evaluation alone.
    ours_tps = sum(ours["tokens"]) / ours_wall
    worker = os.path.join(scratch, "reference.py")
    with open(worker, "w") as f:
        f.write(REFERENCE_WORKER)
    ref_out, ref_wall, ref_rss = run_with_rss([sys.executable, worker, model, data, str(args.threads)])
    ref = json.loads(ref_out)
    ref_tps = ref["tokens"] / ref["seconds"]
    diff = max(abs(a - b) for a, b in zip(ours["losses"], ref["losses"]) if a is not None)
    print(f"max |loss difference| between the engines: {diff:.2e}")
    print(f"{'':34}{'validator (ORT)':>18}{'transformers':>16}{'ratio':>10}")
    print(f"{'tokens/s (ours: whole process)':34}{ours_tps:18.0f}{ref_tps:16.0f}{ours_tps / ref_tps:10.2f}x")
    print(f"{'wall time, whole run (s)':34}{ours_wall:18.1f}{ref_wall:16.1f}{ref_wall / ours_wall:10.2f}x faster")
    print(f"{'peak RSS (MiB)':34}{ours_rss:18.0f}{ref_rss:16.0f}{ours_rss / ref_rss:10.2f}x")
    print(f"{'peak RSS / weights':34}{ours_rss / weights_mib:18.2f}{ref_rss / weights_mib:16.2f}")
    print(f"our phases: {json.dumps(ours['seconds'])}")
    shutil.rmtree(model)
    return {"profile": profile, "ratio": ours_tps / ref_tps, "rss_over_weights": ours_rss / weights_mib,
            "loss_difference_max": diff}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", choices=sorted(PROFILES) + ["all"], default="all")
    parser.add_argument("--skip-session-sizes", action="store_true")
    parser.add_argument("validator_args", nargs="*", help="more flags for validator eval (after --)")
    args = parser.parse_args()
    if not os.path.exists(VALIDATOR):
        sys.exit("build first: cargo build --release")
    scratch = tempfile.mkdtemp(prefix="eval-bench-")
    try:
        data = os.path.join(scratch, "samples.jsonl")
        make_data(data, args.samples)
        profiles = sorted(PROFILES) if args.profile == "all" else [args.profile]
        results = [compare(scratch, profile, data, args) for profile in profiles]
        print("\nsummary: " + json.dumps(results))

        if not args.skip_session_sizes:
            tiny = os.path.join(scratch, "one.jsonl")
            make_data(tiny, 1)
            print("\nsession build time against file size:")
            print(f"{'layers':>8}{'file MiB':>10}{'session s':>11}{'s per GiB':>11}")
            for layers in (2, 4, 8, 16):
                path = os.path.join(scratch, f"llama-{layers}")
                make_model(path, layers)
                size = os.path.getsize(os.path.join(path, "model.safetensors")) / 2**20
                out, _, _ = run_with_rss([VALIDATOR, "eval", "--json", "--model", path, "--data", tiny, "--threads", str(args.threads)])
                session = json.loads(out)["seconds"]["session"]
                print(f"{layers:>8}{size:>10.0f}{session:>11.2f}{session / (size / 1024):>11.2f}")
                shutil.rmtree(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
