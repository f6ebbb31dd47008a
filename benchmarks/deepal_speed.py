"""DeepAL's MNIST protocol timed through the harness and through a bare PyTorch loop.

    python benchmarks/deepal_speed.py [--data-root ../shared/data] [--device cpu] [--threads 2]

The protocol is the ``deepal-mnist`` task's (the example plug-in in ``examples/deepal_task``):
500 initial samples, +500 for 9 rounds (10 rounds, 5,000 labels), the 60k MNIST pool and 10k
test set, strategy ``random``, a fresh net every round, SGD lr 0.01 momentum 0.5, batches of 64,
10 epochs. It runs

(a) through the harness: ``bench.cli.runner.execute`` of a one-repeat run, as ``python -m bench run
    --task deepal-mnist --strategy random`` does (loading the data, planning, the manifest, a
    checkpoint and the labeled sets after every round, test-set scoring, and the tables and
    figure at the end);
(b) through a bare loop on the same tensors (the data as the task loads it, on the same device):
    per round a new net from a seed, a new SGD optimizer, 10 epochs of shuffled batches of 64,
    then test accuracy (in batches of 256, as the harness scores on a CPU); nothing else. It
    trains on the harness's labeled sets (the run's ``labeled.npz``) and seeds as the harness
    does (round 1's weights from the repeat's seed, round t's from a seed of its own, one
    shuffling generator for the repeat), so both train the same nets on the same batches and
    their test accuracies agree.

Each side is measured ``--times`` times, alternating, the harness first in odd pairs and the
bare loop first in even ones (it trains on the first harness run's labeled sets: every run draws
the same). The table shows per round the fastest of each side's measurements, and the fastest
whole run of each: on a shared machine another process's burst then spoils one measurement of
one round, not the comparison. Before either is timed, a warm-up reads the data and trains a
throwaway net briefly, so that neither pays the one-time costs (file cache, kernel set-up).

The plug-in is used installed (``pip install -e examples/deepal_task``) or, if it is not,
imported from the example's folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness, when run from a checkout that is not installed

from bench.cli.runner import execute  # noqa: E402
from bench.paths import default_data_root  # noqa: E402
from bench.run.config import Execution, RunConfig, resolve_device  # noqa: E402
from bench.run.folder import RunFolder  # noqa: E402
from bench.run.results import load_labeled, read_rounds_csv  # noqa: E402
from bench.run.units import RoundFinished, Started  # noqa: E402
from tasks import TASKS  # noqa: E402

TASK = "deepal-mnist"
#: The bare loop's test batch: the harness's on a CPU (256; DeepAL used 1000, which scores MNIST
#: about 1.3x slower on a CPU), so that the comparison is of the loops, not of a batch size.
EVAL_BATCH = 256


def deepal_task():
    """The ``deepal-mnist`` task: from the installed plug-in, else from the example's source."""
    if TASK not in TASKS:
        sys.path.insert(0, str(ROOT / "examples" / "deepal_task"))
        import deepal_task.task  # noqa: F401  (registers it)
    return TASKS.create(TASK)


#: When the run folder received each unit's start and each finished round (``time.perf_counter``
#: per unit key), filled by :func:`stamp_round_events`: the harness's own wall time per round.
STAMPS: dict[str, list[float]] = {}


def stamp_round_events() -> None:
    """Have :class:`RunFolder` note in :data:`STAMPS` when it receives a unit's start and each
    finished round (once the round's row is written), bookkeeping included."""
    on_event = RunFolder.on_event
    if getattr(on_event, "stamped", False):
        return

    def stamped(self, event):
        on_event(self, event)
        if isinstance(event, (Started, RoundFinished)):
            STAMPS.setdefault(event.unit.key, []).append(time.perf_counter())

    stamped.stamped = True
    RunFolder.on_event = stamped


def run_harness(args, out: Path) -> dict:
    """(a): the run through ``execute``; its rows, labeled sets and timings."""
    stamp_round_events()
    STAMPS.clear()
    config = RunConfig(
        task=TASK,
        strategies=["random"],
        rounds=args.rounds,
        initial=args.initial,
        increment=args.increment,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        subset=args.subset,
        data_root=Path(args.data_root),
        download=False,
        out=out,
        quiet=True,
    )
    start = time.perf_counter()
    execute(config, Execution())
    total = time.perf_counter() - start
    rows = read_rounds_csv(out / "rounds.csv").sort_values("round")
    (unit_stamps,) = STAMPS.values()
    return {
        "total_s": total,
        "round_wall_s": list(np.diff(unit_stamps)),  # from the unit's start / previous round to this round's row
        "train_s": rows["train_s"].tolist(),
        "eval_s": rows["eval_s"].tolist(),
        "select_s": rows["select_s"].tolist(),
        "label_s": rows["label_s"].tolist(),
        "accuracy": rows["value"].tolist(),
        "n_labeled": rows["n_labeled"].tolist(),
        "seed": int(rows["seed"].iloc[0]),
        "labeled": {t: load_labeled(out / "labeled.npz")[f"random/repeat0/round{t}"] for t in rows["round"]},
        "manifest": json.loads((out / "manifest.json").read_text()),
    }


def round_seed(seed: int, t: int) -> int:
    """The seed of round t's fresh net in a repeat seeded ``seed`` (as the harness draws it)."""
    return int(np.random.SeedSequence([seed, t]).generate_state(1)[0])


def run_bare(task, args, device: torch.device, seed: int, labeled: dict[int, np.ndarray]) -> dict:
    """(b): plain PyTorch on the task's tensors: per round a new net, SGD, shuffled batches, accuracy."""
    start = time.perf_counter()
    data = task.load(Path(args.data_root), download=False)
    if args.subset is not None:
        data = data.subset(args.subset, torch.Generator().manual_seed(args.seed))
    pool_x, pool_y, test_x, test_y = (t.to(device) for t in (data.pool_x, data.pool_y, data.test_x, data.test_y))
    load_s = time.perf_counter() - start
    p = task.protocol.replace(epochs=args.epochs)

    def new_net(t: int) -> nn.Module:
        if t == 1:
            torch.manual_seed(seed)  # round 1: the repeat's seed, which also seeds the dropout masks
            return task.make_model().to(device)
        with torch.random.fork_rng(devices=[]):  # later rounds: a seed of their own, masks go on
            torch.manual_seed(round_seed(seed, t))
            return task.make_model().to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    shuffle = torch.Generator().manual_seed(seed)
    result = {"load_s": load_s, "round_wall_s": [], "train_s": [], "eval_s": [], "accuracy": []}
    for t in sorted(labeled):
        round_start = time.perf_counter()
        index = torch.as_tensor(labeled[t], device=device)
        x, y = pool_x[index], pool_y[index]
        net = new_net(t)
        optimizer = torch.optim.SGD(net.parameters(), lr=p.lr, **p.optimizer_options)
        net.train()
        for _ in range(p.epochs):
            order = torch.randperm(len(x), generator=shuffle).to(device)
            for i in range(0, len(x), p.batch_size):
                batch = order[i : i + p.batch_size]
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
                optimizer.step()
        sync()
        trained = time.perf_counter()
        net.eval()
        with torch.inference_mode():
            correct = sum(
                int((net(test_x[i : i + EVAL_BATCH]).argmax(1) == test_y[i : i + EVAL_BATCH]).sum())
                for i in range(0, len(test_x), EVAL_BATCH)
            )
        done = time.perf_counter()
        result["accuracy"].append(100.0 * correct / len(test_x))
        result["train_s"].append(trained - round_start)
        result["eval_s"].append(done - trained)
        result["round_wall_s"].append(done - round_start)
    result["total_s"] = load_s + sum(result["round_wall_s"])
    return result


def warm_up(task, args, device: torch.device) -> None:
    """Read the data once and train a throwaway net for a few batches."""
    data = task.load(Path(args.data_root), download=False)
    torch.manual_seed(12345)
    net = task.make_model().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.5)
    x, y = data.pool_x[:1280].to(device), data.pool_y[:1280].to(device)
    for i in range(0, len(x), 64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 64]), y[i : i + 64]).backward()
        optimizer.step()
    with torch.inference_mode():
        net.eval()(data.test_x[:2000].to(device))


def fastest(runs: list[dict], key: str) -> list[float]:
    """Per round, the fastest of the measurements' ``key`` seconds."""
    return [min(values) for values in zip(*(run[key] for run in runs))]


def report(harnesses: list[dict], bares: list[dict], device: torch.device, threads: int) -> str:
    """The table: per round the fastest of the measurements of each side, then the totals."""
    h = {key: fastest(harnesses, key) for key in ("round_wall_s", "train_s", "eval_s")}
    b = {key: fastest(bares, key) for key in ("round_wall_s", "train_s", "eval_s")}
    chose = [s + lab for s, lab in zip(fastest(harnesses, "select_s"), fastest(harnesses, "label_s"))]
    h_acc, b_acc = harnesses[0]["accuracy"], bares[0]["accuracy"]
    lines = [
        f"device {device}, torch threads {threads}, task {TASK}, strategy random, {len(h_acc)} rounds; "
        f"seconds: the fastest of {len(harnesses)} alternating measurements of each, per round",
        "",
        "round  labeled | harness: wall   train  eval  select+label  acc (%) | bare: wall   train  eval  acc (%)",
    ]
    for i, n in enumerate(harnesses[0]["n_labeled"]):
        lines.append(
            f"{i + 1:>5}  {n:>7} | {h['round_wall_s'][i]:>13.2f} {h['train_s'][i]:>7.2f} {h['eval_s'][i]:>5.2f} "
            f"{chose[i]:>13.3f} {h_acc[i]:>8.2f} | {b['round_wall_s'][i]:>10.2f} {b['train_s'][i]:>7.2f} "
            f"{b['eval_s'][i]:>5.2f} {b_acc[i]:>8.2f}"
        )
    rounds_h, rounds_b = sum(h["round_wall_s"]), sum(b["round_wall_s"])
    train_h, train_b = sum(h["train_s"]), sum(b["train_s"])
    total_h, total_b = min(r["total_s"] for r in harnesses), min(r["total_s"] for r in bares)
    outside = min(r["total_s"] - sum(r["round_wall_s"]) for r in harnesses)
    identical = all(r["accuracy"] == h_acc for r in harnesses + bares)

    def seconds(runs: list[dict]) -> str:
        return ", ".join(f"{r['total_s']:.1f}" for r in runs)

    lines += [
        "",
        f"rounds, wall    harness {rounds_h:7.1f} s   bare {rounds_b:7.1f} s   "
        f"harness / bare {rounds_h / rounds_b:.3f}",
        f"training only   harness {train_h:7.1f} s   bare {train_b:7.1f} s   harness / bare {train_h / train_b:.3f}",
        f"whole run       harness {total_h:7.1f} s   bare {total_b:7.1f} s   harness / bare {total_h / total_b:.3f}"
        f"   (the fastest run of each)",
        f"  harness's whole run: execute(): loading the data, planning, the rounds (each with its checkpoint and "
        f"labeled sets), tables and figure; {outside:.1f} s outside the rounds",
        f"  bare whole run: loading the data ({min(r['load_s'] for r in bares):.1f} s) and the rounds",
        f"  every measurement's whole run: harness {seconds(harnesses)} s; bare {seconds(bares)} s",
        f"test accuracy per round: {'identical in every measurement of both' if identical else 'DIFFERS'}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(default_data_root()))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--times",
        type=int,
        default=4,
        help="measurements of each side, alternating; the fastest is reported (default 4)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the harness's run and summary.json (default: results/runs/deepal-speed-<time>)",
    )
    smaller = parser.add_argument_group("a smaller protocol (quick checks of this script; default: the task's)")
    for flag in ("rounds", "initial", "increment", "epochs", "subset"):
        smaller.add_argument(f"--{flag}", type=int, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "results" / "runs" / f"deepal-speed-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    task = deepal_task()
    args.epochs = args.epochs or task.protocol.epochs

    warm_up(task, args, device)
    harnesses, bares = [], []
    labeled = None  # the harness's labeled sets (the same in every run: it is seeded)
    for i in range(args.times):  # alternating, and each side first in every other pair
        for side in ("harness", "bare") if i % 2 == 0 else ("bare", "harness"):
            if side == "harness":
                harnesses.append(run_harness(args, out / f"harness-{i + 1}"))
                labeled, seed = harnesses[-1].pop("labeled"), harnesses[-1]["seed"]
            else:
                bares.append(run_bare(task, args, device, seed, labeled))
        print(
            f"measurement {i + 1}: harness {harnesses[-1]['total_s']:.1f} s, bare {bares[-1]['total_s']:.1f} s",
            flush=True,
        )
    text = report(harnesses, bares, device, torch.get_num_threads())
    print(text)
    manifest = harnesses[0]["manifest"]
    for h in harnesses:
        h.pop("manifest")
    summary = {
        "harness": harnesses,
        "bare": bares,
        "device": manifest["device"],
        "protocol": manifest["protocol"],
        "provided_by": manifest["provided_by"]["task"],
        "versions": manifest["versions"],
        "command": " ".join(sys.argv),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(text + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
