"""The successor's live model size on a CPU: `validator eval` on a Llama 3.2 3B-shaped model
(3.2e9 parameters, tied embeddings, bf16, 6.4 GB), against transformers float32 on the same
machine, in one script.

    cargo build --release
    python3 benches/eval_cpu_3b.py [--samples 8] [--threads 2] [--reference] [--keep DIR]

Needs a Python with torch, safetensors and transformers. It writes the model (random weights,
not committed) and a few synthetic samples to a scratch directory, then measures:
- our memory estimate (read off a refusal at a budget of one byte) against the real peak RSS
  of the whole `validator eval` process, run at this machine's default budget;
- with --reference, tokens per second of the whole `validator eval` process (load, export,
  session build and scoring) against transformers float32's evaluation loop, and the loss
  agreement.
Every figure is printed with its ratio, and the CPU is named, since ratios depend on it.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import eval_cpu  # noqa: E402  (make_data, run_with_rss, the reference worker)

ROOT = os.path.dirname(HERE)
VALIDATOR = os.path.join(ROOT, "target", "release", "validator")

# Llama 3.2 3B's shape (config.json of meta-llama/Llama-3.2-3B).
SHAPE = dict(
    vocab_size=128256,
    hidden_size=3072,
    intermediate_size=8192,
    num_hidden_layers=28,
    num_attention_heads=24,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=True,
)


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def make_model(path, seed=0):
    """Writes the model tensor by tensor in bf16 (small norms, as trained weights have them),
    without building it in torch: the 3B model would need its float32 twice over."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    os.makedirs(path, exist_ok=True)
    h, i, layers = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["num_hidden_layers"]
    heads, kv = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"]
    head_dim = h // heads

    def weight(*shape):
        return (torch.randn(*shape, dtype=torch.float32) * 0.02).to(torch.bfloat16)

    shards, tensors, size, index = [], {}, 0, {}
    def flush():
        nonlocal tensors, size
        if tensors:
            shards.append(tensors)
            tensors, size = {}, 0

    def add(name, tensor):
        nonlocal size
        tensors[name] = tensor
        size += tensor.numel() * 2
        if size > 2 << 30:
            flush()

    add("model.embed_tokens.weight", weight(SHAPE["vocab_size"], h))
    for layer in range(layers):
        p = f"model.layers.{layer}."
        add(p + "self_attn.q_proj.weight", weight(heads * head_dim, h))
        add(p + "self_attn.k_proj.weight", weight(kv * head_dim, h))
        add(p + "self_attn.v_proj.weight", weight(kv * head_dim, h))
        add(p + "self_attn.o_proj.weight", weight(h, heads * head_dim))
        add(p + "mlp.gate_proj.weight", weight(i, h))
        add(p + "mlp.up_proj.weight", weight(i, h))
        add(p + "mlp.down_proj.weight", weight(h, i))
        add(p + "input_layernorm.weight", torch.ones(h, dtype=torch.bfloat16))
        add(p + "post_attention_layernorm.weight", torch.ones(h, dtype=torch.bfloat16))
    add("model.norm.weight", torch.ones(h, dtype=torch.bfloat16))
    flush()
    total, parameters = len(shards), 0
    for number, shard in enumerate(shards, 1):
        name = f"model-{number:05d}-of-{total:05d}.safetensors"
        save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
        for key, tensor in shard.items():
            index[key] = name
            parameters += tensor.numel()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": parameters * 2}, "weight_map": index}, f)
    config = dict(SHAPE, architectures=["LlamaForCausalLM"], model_type="llama",
                  hidden_act="silu", torch_dtype="bfloat16", bos_token_id=128000,
                  eos_token_id=128001, attention_bias=False, mlp_bias=False)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    tokenizer = os.path.join(ROOT, "fixtures", "models", "tokenizer-llama3")
    for name in os.listdir(tokenizer):
        shutil.copy(os.path.join(tokenizer, name), path)
    return parameters


def estimate_bytes(model, data, threads):
    """Our estimate, as the refusal at a budget of one byte states it."""
    result = subprocess.run(
        [VALIDATOR, "eval", "--model", model, "--data", data, "--threads", str(threads),
         "--eval-memory-max-bytes", "1"], capture_output=True, text=True)
    found = re.search(r"needs an estimated ([0-9.]+) GiB", result.stderr + result.stdout)
    if not found:
        sys.exit(f"no estimate in:\n{result.stderr[-2000:]}")
    return float(found.group(1)) * 2**30


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="also run transformers f32")
    parser.add_argument("--keep", help="write (or reuse) the model in this directory")
    args = parser.parse_args()
    if not os.path.exists(VALIDATOR):
        sys.exit("build first: cargo build --release")
    scratch = tempfile.mkdtemp(prefix="eval3b-")
    model = args.keep or os.path.join(scratch, "llama-3b")
    if not os.path.exists(os.path.join(model, "config.json")):
        parameters = make_model(model)
        print(f"wrote {parameters / 1e9:.3f}e9 parameters to {model}")
    data = os.path.join(scratch, "samples.jsonl")
    eval_cpu.make_data(data, args.samples)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.threads} threads; {args.samples} samples")

    estimate = estimate_bytes(model, data, args.threads)
    # At this machine's default budget: on a 24 GiB machine the model must evaluate as is.
    command = [VALIDATOR, "eval", "--json", "--model", model, "--data", data,
               "--threads", str(args.threads)]
    out, wall, rss_mib = eval_cpu.run_with_rss(command)
    ours = json.loads(out)
    peak = rss_mib * 2**20
    print(f"estimate {estimate / 2**30:.2f} GiB, real peak RSS {peak / 2**30:.2f} GiB: "
          f"estimate/peak = {estimate / peak:.3f} (wanted 1.00 to 1.15)")
    tokens = sum(ours["tokens"])
    print(f"ours: {tokens} tokens in {wall:.1f} s, whole process, at the default budget "
          f"(phases: {json.dumps(ours['seconds'])})")
    if args.reference:
        worker = os.path.join(scratch, "reference.py")
        with open(worker, "w") as f:
            f.write(eval_cpu.REFERENCE_WORKER)
        ref_out, ref_wall, ref_rss = eval_cpu.run_with_rss([sys.executable, worker, model, data, str(args.threads)])
        ref = json.loads(ref_out)
        diff = max(abs(a - b) for a, b in zip(ours["losses"], ref["losses"]) if a is not None)
        ours_tps, ref_tps = tokens / wall, ref["tokens"] / ref["seconds"]
        print(f"transformers f32: {ref['tokens']} tokens in {ref['seconds']:.1f} s of evaluation "
              f"({ref_wall:.1f} s whole), peak RSS {ref_rss / 1024:.2f} GiB")
        print(f"tokens/s ratio, ours (whole process) / transformers (evaluation loop): "
              f"{ours_tps / ref_tps:.2f} (wanted >= 1.3); largest loss difference {diff:.1e}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
