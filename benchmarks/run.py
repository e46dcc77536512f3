"""``make bench``: every case in a fresh process, results side by side with ratios, as Markdown tables.

    python -m benchmarks.run [--only divergences closed_forms fused_linear sinkhorn startup content train
                              cluster threads rl_peer] [--skip-huge]

Targets (from the project's performance goals) are checked and marked, never asserted: a benchmark
reports, the tests decide correctness.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch

from benchmarks import rl_peer_case

DIVERGENCE_SIZES = [(256, 10), (4096, 100), (4096, 32000)]
HUGE = (8192, 128000)
TARGETED = ["kl", "rkl", "js", "tv", "hellinger"]
SINKHORN_CASES = [(256, 10, 20), (256, 100, 100), (64, 1000, 50)]
CLOSED_FORMS = ["gjs:beta=0.5", "skl:alpha=0.1", "srkl:alpha=0.1", "alpha:alpha=0.5", "chi2", "neyman_chi2"]
CLOSED_FORMS += ["cs"]
CLOSED_FORM_SIZE = (4096, 32000)
CLOSED_FORM_IMPLS = ("ours", "eager", "blocks")
CLOSED_FORM_REPEATS = 5  # eager paths vary by tens of percent from one process to the next here
LINEAR_SIZES = [(1024, 256, 16000)]  # (tokens, hidden, vocabulary)
HUGE_LINEAR = (8192, 1024, 128000)
LINEAR_DIVERGENCES = ["kl", "js"]
LINEAR_VARIANTS = ["registry", "plain", "fused_linear"]
GIB = 1024**3


def case(module: str, *args: object, timeout: int = 1800) -> dict | None:
    """Run ``python -m benchmarks.<module> args`` and return its RESULT record (None if it failed)."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
    print(f"  ! {' '.join(command[2:])} failed: {tail[0][:160]}", file=sys.stderr)
    return None


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(value: float | None) -> str:
    return f"{value:.2f}×" if value else "—"


def mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def divergences(skip_huge: bool) -> list[str]:
    lines = [
        "### Divergences: forward + backward of the batch mean (fp32, student side)",
        "",
        "floor: the work no implementation avoids (4 exp passes at the in-cache exp rate, one read of both "
        "inputs and one write of the gradient at streaming speed), measured in the same run. First call: "
        "torch.compile's compilation; ours: loading the compiled row kernels (built at install).",
        "",
        "| case | reference | torch.compile (first call) | ours (first call) | floor | speed-up vs ref | "
        "vs compile | ours / floor | extra memory ours (× one gradient) | extra memory ref | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rows, classes in DIVERGENCE_SIZES:
        repeats = 3 if rows * classes < 10**7 else 2
        for name in TARGETED:
            ref = case("divergence_case", name, "reference", rows, classes, repeats)
            comp = case("divergence_case", name, "compiled", rows, classes, repeats)
            ours = case("divergence_case", name, "ours", rows, classes, repeats)
            floor = case("divergence_case", name, "floor", rows, classes, repeats)
            if not (ref and ours):
                lines.append(f"| {name} {rows}×{classes} | failed | | | | | | | | | |")
                continue
            speedup = ref["seconds"] / ours["seconds"]
            vs_compile = comp["seconds"] / ours["seconds"] if comp else None
            vs_floor = ours["seconds"] / floor["seconds"] if floor else None
            grad = ours["gradient_bytes"]
            memory = ours["extra_bytes"] / grad
            target = ""
            if (rows, classes) == (4096, 32000):
                ok = speedup >= 4 and (vs_compile is None or vs_compile >= 1) and memory <= 1.25
                near_floor = vs_floor is not None and vs_floor <= 1.5
                target = f"{mark(ok)} ≥ 4× ref, ≥ 1× compile, ≤ 1.25×; {mark(near_floor)} ≤ 1.5× floor"
            compiled_cell = f"{fmt_s(comp['seconds'])} ({fmt_s(comp['first_call_seconds'])})" if comp else "—"
            lines.append(
                f"| {name} {rows}×{classes} | {fmt_s(ref['seconds'])} | {compiled_cell} | "
                f"{fmt_s(ours['seconds'])} ({fmt_s(ours['first_call_seconds'])}) | "
                f"{fmt_s(floor and floor['seconds'])} | {speedup:.1f}× | {ratio(vs_compile)} | "
                f"{ratio(vs_floor)} | "
                f"{memory:.2f} | {ref['extra_bytes'] / grad:.2f} | {target} |"
            )
            print(lines[-1], flush=True)
    if not skip_huge:
        rows, classes = HUGE
        for name in ("kl", "rkl", "js"):
            ours = case("divergence_case", name, "ours", rows, classes, 1)
            if ours:
                extra = ours["extra_bytes"]
                line = (
                    f"| {name} {rows}×{classes} | not run | not run | {fmt_s(ours['seconds'])} | | | | | "
                    f"{extra / ours['gradient_bytes']:.2f} ({extra / GIB:.1f} GiB) | | {mark(True)} |"
                )
            else:
                line = f"| {name} {rows}×{classes} | | | failed | | | | | | | {mark(False)} |"
            lines.append(line)
            print(line, flush=True)
    return lines


def closed_forms() -> list[str]:
    rows, classes = CLOSED_FORM_SIZE
    lines = [
        f"### Members beyond the five targeted ({rows} × {classes}, fp32, frozen teacher; forward + "
        "backward of the batch mean)",
        "",
        "ours: as users get it (the compiled row kernel where the member has one); eager closed form: its "
        "`_fused` with the row kernels off; autograd blocks: its formula differentiated by autograd block "
        "by block (the fused path of a member without a closed form).",
        "",
        "| member | ours | eager closed form | autograd blocks | ours vs blocks |",
        "|---|---|---|---|---|",
    ]
    for spec in CLOSED_FORMS:
        runs = {
            impl: case("closed_form_case", spec, impl, rows, classes, CLOSED_FORM_REPEATS)
            for impl in CLOSED_FORM_IMPLS
        }
        ours, blocks = runs["ours"], runs["blocks"]
        speedup = ratio(blocks["seconds"] / ours["seconds"]) if ours and blocks else "—"
        cells = " | ".join(fmt_s(record and record["seconds"]) for record in runs.values())
        lines.append(f"| {spec.replace(':', ' ')} | {cells} | {speedup} |")
        print(lines[-1], flush=True)
    return lines


def fmt_linear_cell(record: dict | None) -> str:
    if not record:
        return "failed"
    if record.get("error"):
        return f"out of memory (> {record['memory_budget_bytes'] / GIB:.1f} GiB)"
    return (
        f"{fmt_s(record['seconds'])} (CPU {fmt_s(record['cpu_seconds'])}), "
        f"{record['extra_bytes'] / GIB:.2f} GiB"
    )


def fused_linear(skip_huge: bool) -> list[str]:
    lines = [
        "### Fused linear divergence: forward + backward of the token mean from hidden states and output "
        "weights (fp32; student hidden and weight trained, teacher frozen)",
        "",
        "| tokens × hidden × vocabulary | divergence | (a) logits + registry (auto): time, extra memory | "
        "(b) logits + plain autograd | (c) fused linear | (c) / (a) time | (c) / (a) extra memory | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sizes = LINEAR_SIZES + ([] if skip_huge else [HUGE_LINEAR])
    for tokens, hidden, vocabulary in sizes:
        repeats = 0 if (tokens, hidden, vocabulary) == HUGE_LINEAR else 3
        for name in LINEAR_DIVERGENCES:
            runs = {
                variant: case("fused_linear_case", name, variant, tokens, hidden, vocabulary, repeats)
                for variant in LINEAR_VARIANTS
            }
            cells = " | ".join(fmt_linear_cell(record) for record in runs.values())
            registry, ours = runs["registry"], runs["fused_linear"]
            comparable = registry and ours and not registry.get("error") and not ours.get("error")
            time_ratio = ours["seconds"] / registry["seconds"] if comparable else None
            cpu_ratio = ours["cpu_seconds"] / registry["cpu_seconds"] if comparable else None
            memory_ratio = ours["extra_bytes"] / max(1, registry["extra_bytes"]) if comparable else None
            target = ""
            if comparable and (tokens, hidden, vocabulary) == HUGE_LINEAR:
                slower = time_ratio > 1 or cpu_ratio > 1  # CPU time too: other jobs can skew wall times
                target = f"{mark(memory_ratio <= 0.25)} memory ≤ 0.25×, {mark(not slower)} time ≤ 1×"
            lines.append(
                f"| {tokens} × {hidden} × {vocabulary} | {name} | {cells} | {ratio(time_ratio)} "
                f"(CPU {ratio(cpu_ratio)}) | {ratio(memory_ratio)} | {target} |"
            )
            print(lines[-1], flush=True)
    return lines


def sinkhorn() -> list[str]:
    lines = [
        "### Sinkhorn: B per-row problems over C classes, fixed iterations, forward (ε = 0.1)",
        "",
        "| (B, C, iters) | POT loop | POT batched | ours | vs loop | vs batched "
        "| rel. error ours / POT batched (vs converged) | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rows, classes, iters in SINKHORN_CASES:
        loop = case("sinkhorn_case", "pot_loop", rows, classes, iters, 1)
        batch = case("sinkhorn_case", "pot_batch", rows, classes, iters)
        ours = case("sinkhorn_case", "ours", rows, classes, iters)
        if not ours:
            lines.append(f"| ({rows}, {classes}, {iters}) | failed | | | | | | |")
            continue
        vs_loop = loop["seconds"] / ours["seconds"] if loop else None
        vs_batch = batch["seconds"] / ours["seconds"] if batch else None
        target = ""
        if (rows, classes, iters) == (256, 100, 100):
            target = mark((vs_loop or 0) >= 15 and (vs_batch or 0) >= 1.3)
        lines.append(
            f"| ({rows}, {classes}, {iters}) | {fmt_s(loop and loop['seconds'])} "
            f"| {fmt_s(batch and batch['seconds'])} | {fmt_s(ours['seconds'])} | {ratio(vs_loop)} | "
            f"{ratio(vs_batch)} | {ours['rel_error']:.1e} / "
            f"{batch['rel_error'] if batch else float('nan'):.1e} | {target} |"
        )
        print(lines[-1], flush=True)
    return lines


def startup() -> list[str]:
    record = case("startup_case")
    if not record:
        return ["### Start-up", "", "failed"]
    return [
        "### Start-up (new processes, median of 3)",
        "",
        "| what | time | target |",
        "|---|---|---|",
        f"| `dlab --help` | {fmt_s(record['help_seconds'])} | {mark(record['help_seconds'] < 1)} < 1 s |",
        *(
            f"| a refused config: {what} | {fmt_s(seconds)} | {mark(seconds < 1)} < 1 s |"
            for what, seconds in record["config_error_seconds"].items()
        ),
        f"| one run of 1 epoch (digits KD, cached teacher) | {fmt_s(record['one_epoch_run_seconds'])} | |",
    ]


def content_hash() -> list[str]:
    record = case("content_hash_case")
    if not record:
        return ["### Data content identity", "", "failed"]
    return [
        "### Data content identity (SHA-256 of a data file; median of 5, warm page cache)",
        "",
        "| file | first hash | cached (size and mtime unchanged) | first / cached |",
        "|---|---|---|---|",
        *(
            f"| {name} | {fmt_s(times['first_s'])} | {fmt_s(times['cached_s'])} | "
            f"{ratio(times['first_s'] / times['cached_s'])} |"
            for name, times in record.items()
        ),
    ]


def train_step() -> list[str]:
    record = case("train_step_case")
    if not record:
        return ["### Digits KD training step", "", "failed"]
    plain_step, plain_epoch = record["plain_step_ms"], record["plain_epoch_per_step_ms"]

    def row(name: str, prefix: str, target: bool) -> str:
        step, epoch = record[f"{prefix}_step_ms"], record[f"{prefix}_epoch_per_step_ms"]
        marks = f"{mark(step / plain_step <= 1.5)} ≤ 1.5×" if target else ""
        return (
            f"| {name} | {step:.2f} ms | {step / plain_step:.2f}× | {epoch:.2f} ms | "
            f"{epoch / plain_epoch:.2f}× | {marks} |"
        )

    return [
        "### Digits KD training step (batch 64, MLP-32 student, cached MLP 256-256 teacher; "
        f"{record['steps_per_epoch']} steps an epoch, a CSV log every {record['log_every_n_steps']} steps; "
        f"medians over {record['epochs_timed']} epochs each, interleaved)",
        "",
        "| loop | step (median) | vs plain | epoch / steps | vs plain | target |",
        "|---|---|---|---|---|---|",
        row("our LightningModule under `lightning.Trainer`", "lightning", True),
        row("the same, `training_step` returning the loss, nothing logged", "lightning_unlogged", False),
        f"| plain PyTorch loop | {plain_step:.2f} ms | 1.00× | {plain_epoch:.2f} ms | 1.00× | |",
    ]


def cluster() -> list[str]:
    record = case("cluster_case")
    if not record:
        return ["### Cluster launchers", "", "skipped or failed (needs a SLURM controller: make slurm-up)"]
    six, one = record["six_jobs_s"], record["one_job_s"]
    return [
        "### Cluster launchers (single-node SLURM, 2 CPUs; `dlab -m` wall time, median of 3, cached teacher)",
        "",
        f"SLURM submit-to-result latency of a trivial submitit job: {fmt_s(record['submit_to_result_s'])} "
        "(median of 3).",
        "",
        "| sweep | local (sequential, one process) | joblib (one worker per core) | "
        "SLURM array (2 at a time) | SLURM / local |",
        "|---|---|---|---|---|",
        f"| 1 job, 2 epochs | {fmt_s(one['local'])} | — | {fmt_s(one['slurm'])} | "
        f"{ratio(one['slurm'] / one['local'])} |",
        f"| 6 jobs (3 divergences × 2 seeds), 2 epochs | {fmt_s(six['local'])} | {fmt_s(six['joblib'])} | "
        f"{fmt_s(six['slurm'])} | {ratio(six['slurm'] / six['local'])} |",
    ]


def threads() -> list[str]:
    record = case("threads_case", 3)
    if not record:
        return ["### Thread hygiene", "", "failed"]
    alone, over, hygiene = record["alone"], record["oversubscribed"], record["hygiene"]
    cpus = record["cpus"]

    def row(name: str, result: dict, threads: str) -> str:
        return (
            f"| {name} | {threads} | {fmt_s(result['search_s'])} | {fmt_s(result['job_wall_s'])} | "
            f"{fmt_s(result['command_wall_s'])} |"
        )

    return [
        f"### Thread hygiene: two CTS runs side by side on {cpus} CPUs (`experiment=cts_digits`, joblib with "
        f"2 workers; medians of {record['repeats']})",
        "",
        "| variant | threads per process | CTS search per job | wall time per job | whole command |",
        "|---|---|---|---|---|",
        row("one run alone", alone, str(cpus)),
        row("two side by side, oversubscribed (torch's default)", over, str(cpus)),
        row("two side by side, `threads=auto`", hygiene, str(max(1, cpus // 2))),
        "",
        f"Search time, oversubscribed / hygiene: {ratio(over['search_s'] / hygiene['search_s'])}; "
        f"whole command: {ratio(over['command_wall_s'] / hygiene['command_wall_s'])}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    everything = [
        "divergences",
        "closed_forms",
        "fused_linear",
        "sinkhorn",
        "startup",
        "content",
        "train",
        "cluster",
        "threads",
        "rl_peer",
    ]
    parser.add_argument("--only", nargs="+", choices=everything)
    parser.add_argument("--skip-huge", action="store_true", help="skip the 8192 x 128000 cases (~13 GB)")
    args = parser.parse_args()
    wanted = args.only or everything
    started = time.time()
    header = [
        f"## {time.strftime('%Y-%m-%d')} — {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}",
        "",
    ]
    sections = {
        "divergences": lambda: divergences(args.skip_huge),
        "closed_forms": closed_forms,
        "fused_linear": lambda: fused_linear(args.skip_huge),
        "sinkhorn": sinkhorn,
        "startup": startup,
        "content": content_hash,
        "train": train_step,
        "cluster": cluster,
        "threads": threads,
        "rl_peer": lambda: rl_peer_case.table(case),
    }
    body: list[str] = []
    for name in wanted:
        body += sections[name]() + [""]
    print("\n".join(header + body))
    print(f"(benchmark wall time {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
