"""GPU benchmark: `validator eval --device cuda` against transformers bf16 on the same card, in
one script, on Llamas generated there with the real 128,256-entry vocabulary.

    # here: cargo build --release && benches/gpu/pack.sh    (see benches/gpu/device.sh)
    python3 benches/eval_gpu.py --validator PATH [--samples 400] [--profile all] [--json OUT]
    python3 benches/eval_gpu.py --device cpu --profile tiny     # the same path, dry, on CPU

Needs torch with CUDA and transformers, and ONNX Runtime's GPU build for the validator
(`ORT_DYLIB_PATH` naming `libonnxruntime.so.1.31.1` with its CUDA provider beside it, CUDA 13
and cuDNN on `LD_LIBRARY_PATH`: benches/gpu/device.sh sets both). For each model it reports,
evaluation tokens per second (ours: the evaluation phase of the whole `validator eval` process,
which reports its phases, first runs of every shape included; transformers: its loop after
three warm-up samples), model FLOPs utilisation (2 · parameters · tokens/s over the card's dense bf16
peak), the largest loss difference, our session build time against the weights' size, and the
peak GPU memory of each engine (ours sampled from nvidia-smi, transformers' from torch).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_cpu  # noqa: E402  (shares the data and process helpers)

VOCAB_LLAMA3 = 128256
# Llama 3.2 1B and 3B shapes (tied embeddings), the sizes one H200 session evaluates in minutes;
# `tiny` is the CPU dry run's.
PROFILES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8),
    "llama-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                     num_attention_heads=24, num_key_value_heads=8),
    "tiny": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=2),
}
DEFAULT_PROFILES = ["llama-1b", "llama-3b"]


def make_model(path, profile, device, seed=0):
    """Generates a bf16 Llama of the profile's shape (initialised on the card: seconds, not
    minutes) and saves it with the fixture tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(eval_cpu.TOKENIZER)
    config = LlamaConfig(vocab_size=VOCAB_LLAMA3, max_position_embeddings=4096, tie_word_embeddings=True,
                         rope_theta=500000.0, **PROFILES[profile])
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    parameters = sum(p.numel() for p in model.parameters())
    # This process holds nothing on the card while the engines run.
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return parameters


class GpuMemorySampler:
    """The peak GPU memory of every process but this script's, from nvidia-smi every 100 ms
    (the engine under test is the only other one)."""

    def __init__(self, enabled):
        self.enabled, self.peak_mib, self.stop = enabled, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                used = sum(float(line.split(",")[1]) for line in out.splitlines()
                           if "," in line and int(line.split(",")[0]) != os.getpid())
                self.peak_mib = max(self.peak_mib, used)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self.stop.wait(0.1)

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()


REFERENCE_WORKER = r"""
import json, sys, time, torch
from transformers import AutoTokenizer, LlamaForCausalLM
model_dir, data, device = sys.argv[1], sys.argv[2], sys.argv[3]
dtype = torch.bfloat16 if device == "cuda" else torch.float32
tokenizer = AutoTokenizer.from_pretrained(model_dir)
try:
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype)
except TypeError:  # transformers before 4.56 names it torch_dtype
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=dtype)
model = model.to(device).eval()
assert next(model.parameters()).dtype == dtype
def ids(messages, generation):
    out = tokenizer.apply_chat_template(messages, truncation=True, max_length=2048, add_generation_prompt=generation, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)
batches = []
for line in open(data):
    s = json.loads(line)
    user = {"role": "user", "content": s["prompt"].strip()}
    assistant = {"role": "assistant", "content": s["response"].strip()}
    batches.append((ids([user], True), ids([user, assistant], False)))
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
losses, tokens = [], 0
with torch.inference_mode():
    for prompt, full in batches[:3]:
        model(torch.tensor([full], device=device))
    sync(); started = time.monotonic()
    for prompt, full in batches:
        inputs = torch.tensor([full], device=device); labels = inputs.clone(); labels[:, :len(prompt)] = -100
        losses.append(model(inputs, labels=labels).loss.item()); tokens += len(full)
    sync()
seconds = time.monotonic() - started
peak = torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else 0.0
print(json.dumps({"losses": losses, "tokens": tokens, "seconds": seconds, "gpu_peak_mib": peak}))
"""


def compare(scratch, profile, data, args, env):
    model = os.path.join(scratch, profile)
    started = time.monotonic()
    parameters = make_model(model, profile, args.device)
    weights_gib = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model) if f.endswith(".safetensors")) / 2**30
    print(f"\n{profile}: {parameters / 1e9:.2f}B parameters, bf16, {weights_gib:.2f} GiB "
          f"(generated in {time.monotonic() - started:.0f} s); {args.samples} samples on {args.device}", flush=True)
    command = [args.validator, "eval", "--json", "--device", args.device, "--model", model, "--data", data]
    command += args.validator_args
    with GpuMemorySampler(args.device == "cuda") as ours_gpu:
        ours_out, ours_wall, ours_rss = eval_cpu.run_with_rss(command, env=env)
    ours = json.loads(ours_out)
    worker = os.path.join(scratch, "reference.py")
    with open(worker, "w") as f:
        f.write(REFERENCE_WORKER)
    ref_out, _, ref_rss = eval_cpu.run_with_rss([sys.executable, worker, model, data, args.device], env=env)
    ref = json.loads(ref_out)
    tokens = sum(ours["tokens"])
    phases = ours["seconds"]
    ours_tps = tokens / phases["evaluate"]
    ours_whole_tps = tokens / ours_wall
    ref_tps = ref["tokens"] / ref["seconds"]
    mfu = lambda tps: 2 * parameters * tps / (args.peak_tflops * 1e12)  # noqa: E731
    pairs = [(a, b) for a, b in zip(ours["losses"], ref["losses"]) if a is not None and b == b]
    diff = max((abs(a - b) for a, b in pairs), default=float("nan"))
    print(f"max |loss difference| from transformers ({'bf16' if args.device == 'cuda' else 'f32'}): {diff:.2e}")
    print(f"{'':30}{'validator (ORT)':>18}{'transformers':>16}{'ratio':>8}")
    print(f"{'eval tokens/s':30}{ours_tps:18.0f}{ref_tps:16.0f}{ours_tps / ref_tps:8.2f}x")
    print(f"{'tokens/s, whole process':30}{ours_whole_tps:18.0f}")
    print(f"{'MFU vs bf16 dense peak':30}{mfu(ours_tps):18.1%}{mfu(ref_tps):16.1%}")
    print(f"{'peak GPU memory (MiB)':30}{ours_gpu.peak_mib:18.0f}{ref['gpu_peak_mib']:16.0f}")
    print(f"{'host peak RSS (MiB)':30}{ours_rss:18.0f}{ref_rss:16.0f}")
    print(f"session build: {phases['session']:.2f} s for {weights_gib:.2f} GiB "
          f"({phases['session'] / weights_gib:.2f} s per GiB); our phases: {json.dumps(phases)}", flush=True)
    shutil.rmtree(model)
    return {"profile": profile, "parameters": parameters, "device": args.device, "weights_gib": weights_gib,
            "tokens_per_second": ours_tps, "tokens_per_second_whole_process": ours_whole_tps,
            "reference_tokens_per_second": ref_tps, "ratio": ours_tps / ref_tps, "mfu": mfu(ours_tps),
            "reference_mfu": mfu(ref_tps), "loss_difference_max": diff, "session_s": phases["session"],
            "gpu_peak_mib": ours_gpu.peak_mib, "reference_gpu_peak_mib": ref["gpu_peak_mib"],
            "rss_mib": ours_rss, "phases": phases}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--validator", default=eval_cpu.VALIDATOR)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--profile", choices=sorted(PROFILES) + ["all"], default="all")
    parser.add_argument("--peak-tflops", type=float, default=989.4, help="dense bf16 peak (H100/H200 SXM: 989.4)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("validator_args", nargs="*", help="more flags for validator eval (after --)")
    args = parser.parse_args()
    if not os.path.exists(args.validator):
        sys.exit(f"no validator at {args.validator}")
    env = dict(os.environ)
    scratch = tempfile.mkdtemp(prefix="eval-gpu-")
    try:
        data = os.path.join(scratch, "samples.jsonl")
        eval_cpu.make_data(data, args.samples)
        profiles = DEFAULT_PROFILES if args.profile == "all" else [args.profile]
        if args.device == "cuda":
            import torch

            card = torch.cuda.get_device_name(0)
        else:
            card = "cpu"
        results = []
        for profile in profiles:
            results.append(compare(scratch, profile, data, args, env))
            if args.json:  # written after each model, so a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({"card": card, "results": results}, f, indent=2)
        print("\nsummary: " + json.dumps({"card": card, "results": results}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
