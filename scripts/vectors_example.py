#!/usr/bin/python3
"""Hold a NumPy implementation to gauge's conformance vectors.

    scripts/vectors_example.py VECTORS_DIR CANDIDATE_DIR [--gauge build/gauge]

Loads VECTORS_DIR/manifest.json (written by `gauge vectors export`), recomputes every case it has a
NumPy recipe for from the exported inputs, writes the outputs under the manifest's file names into
CANDIDATE_DIR, then runs `gauge vectors check` on them and exits with its exit code. Cases without
a recipe are left out, and the check reports them as missing.

Needs only NumPy (Debian's python3-numpy).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def load(vectors_dir, entry):
    """A manifest tensor entry as a NumPy array of its storage type."""
    array = np.load(os.path.join(vectors_dir, entry["file"]))
    assert array.dtype.str == entry["storage"] or array.dtype.str.replace("=", "<") == entry["storage"], entry
    assert list(array.shape) == entry["shape"], entry
    return array


# The semantics written in reference/precision/casts.h: round to nearest even, subnormals kept,
# overflow to Inf, NaN -> quiet NaN keeping the sign and the top payload bits.

def f32_to_bf16(x):
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    quiet_nan = ((bits >> 16) | 0x0040).astype(np.uint16)
    return np.where(np.isnan(x), quiet_nan, rounded)


def f32_to_f16(x):
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = x.astype(np.float16).view(np.uint16)
    bits = x.view(np.uint32)
    quiet_nan = (((bits >> 16) & 0x8000) | 0x7E00 | ((bits >> 13) & 0x03FF)).astype(np.uint16)
    return np.where(np.isnan(x), quiet_nan, rounded)


def bf16_to_f32(bits):
    wide = bits.astype(np.uint32) << 16
    is_nan = (bits & 0x7FFF) > 0x7F80
    return np.where(is_nan, wide | 0x00400000, wide).astype(np.uint32).view(np.float32)


def f16_to_f32(bits):
    with np.errstate(invalid="ignore"):
        wide = bits.view(np.float16).astype(np.float32).view(np.uint32)
    is_nan = (bits & 0x7FFF) > 0x7C00
    return np.where(is_nan, wide | 0x00400000, wide).astype(np.uint32).view(np.float32)


def cast_f32_to_narrow(case, inputs):
    x = inputs["x"]
    return {"y": f32_to_bf16(x) if case["dtype"] == "bf16" else f32_to_f16(x)}


def cast_narrow_to_f32(case, inputs):
    x = inputs["x"]
    return {"y": bf16_to_f32(x) if case["dtype"] == "bf16" else f16_to_f32(x)}


def scheduled_lr(p, step):
    """reference/optim/schedule.cc: linear warm-up, then constant / linear / cosine to the floor."""
    base, warmup, total, floor = p["lr"], p["warmup_steps"], p["schedule_total_steps"], p["floor_lr"]
    if step <= warmup:
        return base * step / warmup
    if p["schedule_after_warmup"] == "constant":
        return base
    if step >= total:
        return floor
    progress = (step - warmup) / (total - warmup)
    if p["schedule_after_warmup"] == "linear":
        return floor + (base - floor) * (1.0 - progress)
    return floor + (base - floor) * (1.0 + np.cos(np.pi * progress)) / 2.0


def adam_one_step(case, inputs):
    """One Adam / AdamW step (PyTorch semantics) on fp32 tensors, computed in float64.

    The step-1 gradient is an input; later steps' gradients are generated from Philox inside gauge,
    so only single-step points are reproduced here. The flat buffers hold every parameter tensor
    back to back with zero gaps, which an elementwise update leaves at zero.
    """
    p = case["params"]
    if p["steps"] != 1 or p["precision"] != "fp32":
        return None
    param = inputs["params"].astype(np.float64)
    grad = inputs["grad"].astype(np.float64)
    m = inputs["exp_avg"].astype(np.float64)
    v = inputs["exp_avg_sq"].astype(np.float64)
    if p["max_grad_norm"] > 0:
        coef = p["max_grad_norm"] / (np.sqrt(np.sum(grad * grad)) + 1e-6)
        if coef < 1:
            grad = grad * coef
    lr, b1, b2, eps, wd, t = scheduled_lr(p, 1), p["beta1"], p["beta2"], p["eps"], p["weight_decay"], 1
    if p["decoupled_weight_decay"]:
        param = param * (1.0 - lr * wd)
    elif wd != 0:
        grad = grad + wd * param
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    outputs = {"exp_avg": m, "exp_avg_sq": v}
    if p["amsgrad"]:
        v = np.maximum(inputs["max_exp_avg_sq"].astype(np.float64), v)
        outputs["max_exp_avg_sq"] = v
    denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
    outputs["params"] = param - (lr / (1 - b1**t)) * m / denom
    return {name: value.astype(np.float32) for name, value in outputs.items()}


RECIPES = {
    "precision/cast_f32_to_narrow": cast_f32_to_narrow,
    "precision/cast_narrow_to_f32": cast_narrow_to_f32,
    "optim/adam_fp32": adam_one_step,
    "optim/adamw_fp32": adam_one_step,
    "optim/adam_amsgrad_l2_fp32": adam_one_step,
    "optim/adamw_amsgrad_clipped_fp32": adam_one_step,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vectors_dir")
    parser.add_argument("candidate_dir")
    parser.add_argument("--gauge", default=os.path.join(os.path.dirname(__file__), "..", "build", "gauge"))
    args = parser.parse_args()

    with open(os.path.join(args.vectors_dir, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(args.candidate_dir, exist_ok=True)
    for case in manifest["cases"]:
        recipe = RECIPES.get(case["operation"])
        if recipe is None:
            print(f"no NumPy recipe for {case['operation']}: {case['id']} left out", file=sys.stderr)
            continue
        inputs = {entry["name"]: load(args.vectors_dir, entry) for entry in case["inputs"]}
        outputs = recipe(case, inputs)
        if outputs is None:
            print(f"the NumPy recipe does not cover {case['id']}: left out", file=sys.stderr)
            continue
        for entry in case["outputs"]:
            np.save(os.path.join(args.candidate_dir, entry["file"]), outputs[entry["name"]])
    return subprocess.call([args.gauge, "vectors", "check", args.vectors_dir, "--candidate", args.candidate_dir])


if __name__ == "__main__":
    sys.exit(main())
