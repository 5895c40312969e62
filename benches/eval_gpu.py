"""GPU benchmark: `validator eval --device cuda` on a generated ~1B-parameter Llama against
transformers in bf16 on the same card, in one script. Meant for an H100 with no network.

    # here: cargo build --release   (carry target/release/validator to the GPU machine)
    python3 benches/eval_gpu.py [--samples 200] [--peak-tflops 989.4]

Needs, on the GPU machine: torch with CUDA, transformers, and the GPU build of ONNX Runtime
1.31 (the `onnxruntime-gpu` wheel's `libonnxruntime.so.1.31.1` with
`libonnxruntime_providers_cuda.so` beside it); `ORT_DYLIB_PATH` may name it, otherwise the
installed `onnxruntime` Python package is used when it has the CUDA provider. CUDA 13 and cuDNN
9 libraries are taken from torch's `nvidia` wheels. It reports evaluation tokens per second for
both engines and model FLOPs utilisation, MFU = 2 · parameters · tokens/s / peak (bf16 dense
peak by default; our graph computes in float32, so its MFU is against the same peak for a fair
ratio).
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_cpu  # noqa: E402  (shares the model, data and process helpers)


def make_billion_model(path, seed=0):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(eval_cpu.TOKENIZER)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def cuda_environment():
    env = dict(os.environ)
    if not env.get("ORT_DYLIB_PATH"):
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            sys.exit("the installed onnxruntime has no CUDA provider; set ORT_DYLIB_PATH to the onnxruntime-gpu library")
        capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
        libraries = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.*")))
        if not libraries:
            sys.exit(f"no libonnxruntime.so.* in {capi}")
        env["ORT_DYLIB_PATH"] = libraries[-1]
    import torch

    nvidia = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia")
    lib_dirs = sorted({os.path.dirname(p) for p in glob.glob(os.path.join(nvidia, "**", "lib*.so*"), recursive=True)})
    env["LD_LIBRARY_PATH"] = ":".join(lib_dirs + [env.get("LD_LIBRARY_PATH", "")])
    return env


REFERENCE_WORKER = r"""
import json, sys, time, torch
from transformers import AutoTokenizer, LlamaForCausalLM
model_dir, data = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
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
with torch.inference_mode():
    for prompt, full in batches[:3]:
        inputs = torch.tensor([full]).cuda(); model(inputs)
    torch.cuda.synchronize(); started = time.monotonic()
    for prompt, full in batches:
        inputs = torch.tensor([full]).cuda(); labels = inputs.clone(); labels[:, :len(prompt)] = -100
        losses.append(model(inputs, labels=labels).loss.item()); tokens += len(full)
    torch.cuda.synchronize()
print(json.dumps({"losses": losses, "tokens": tokens, "seconds": time.monotonic() - started}))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--peak-tflops", type=float, default=989.4, help="bf16 dense peak of the card (H100 SXM: 989.4)")
    args = parser.parse_args()
    env = cuda_environment()
    scratch = tempfile.mkdtemp(prefix="eval-gpu-")
    try:
        model = os.path.join(scratch, "llama-1b")
        parameters = make_billion_model(model)
        data = os.path.join(scratch, "samples.jsonl")
        eval_cpu.make_data(data, args.samples)
        print(f"model: {parameters / 1e9:.2f}B parameters, bf16; {args.samples} samples")
        out, ours_wall, ours_rss = eval_cpu.run_with_rss(
            [eval_cpu.VALIDATOR, "eval", "--json", "--device", "cuda", "--model", model, "--data", data], env=env
        )
        ours = json.loads(out)
        worker = os.path.join(scratch, "reference.py")
        with open(worker, "w") as f:
            f.write(REFERENCE_WORKER)
        out, ref_wall, ref_rss = eval_cpu.run_with_rss([sys.executable, worker, model, data], env=env)
        ref = json.loads(out)
        ours_tps = ours["tokens_per_second"]
        ref_tps = ref["tokens"] / ref["seconds"]
        mfu = lambda tps: 2 * parameters * tps / (args.peak_tflops * 1e12)  # noqa: E731
        diff = max(abs(a - b) for a, b in zip(ours["losses"], ref["losses"]) if a is not None)
        print(f"max |loss difference| (ours f32 vs transformers bf16): {diff:.2e}")
        print(f"{'':26}{'validator (ORT CUDA)':>22}{'transformers bf16':>20}{'ratio':>8}")
        print(f"{'eval tokens/s':26}{ours_tps:22.0f}{ref_tps:20.0f}{ours_tps / ref_tps:8.2f}x")
        print(f"{'MFU vs bf16 peak':26}{mfu(ours_tps):22.1%}{mfu(ref_tps):20.1%}")
        print(f"{'host peak RSS (MiB)':26}{ours_rss:22.0f}{ref_rss:20.0f}")
        print(f"our phases: {json.dumps(ours['seconds'])}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
