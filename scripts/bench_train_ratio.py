#!/usr/bin/env python3
"""Prints repro's and PyTorch's training speed (examples/s) and peak memory, and their
ratios, from the rounds `make bench-train` leaves in a directory: `repro-ce-N.json` and
`repro-de-N.json` (the JSON summaries of `repro dev train-ce` / `train-de`) and
`pytorch-ce-N.json` and `pytorch-de-N.json` (`scripts/bench_train_pytorch.py`), one run
each per round, run alternately.

For each kind (ce, de): the median examples/s (min, max) and median peak RSS of each side,
the ratio of the medians, and the paired ratios (round by round, both measured within
minutes of each other), which show how much of it a shared machine's drift could explain.

    python3 scripts/bench_train_ratio.py target/bench-train
"""
import json
import pathlib
import re
import statistics
import sys

MIB = 1024 * 1024


def load(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"error: {path}: {error}")
    for key in ("examples_per_second", "peak_rss_bytes"):
        if not isinstance(data.get(key), (int, float)):
            sys.exit(f"error: {path}: no number `{key}`")
    return data


def rounds_of(directory, kind):
    pattern = re.compile(rf"repro-{kind}-(\d+)\.json$")
    return sorted(int(m.group(1)) for p in directory.glob(f"repro-{kind}-*.json")
                  if (m := pattern.match(p.name)))


def table(directory, kind, rounds):
    repro = [load(directory / f"repro-{kind}-{n}.json") for n in rounds]
    pytorch = [load(directory / f"pytorch-{kind}-{n}.json") for n in rounds]
    speed = {side: [run["examples_per_second"] for run in runs]
             for side, runs in (("repro", repro), ("pytorch", pytorch))}
    memory = {side: [run["peak_rss_bytes"] for run in runs]
              for side, runs in (("repro", repro), ("pytorch", pytorch))}
    last = pytorch[-1]
    print(f"{kind}: {repro[-1].get('examples_seen', '?')} examples, "
          f"{repro[-1].get('steps', '?')} steps, {len(rounds)} rounds"
          f" (pytorch: batch {last.get('batch', '?')}, max_len {last.get('max_len', '?')},"
          f" torch {last.get('torch', '?')}, {last.get('threads', '?')} threads)")
    line = "  {:<8} {:>8.2f} examples/s  (min {:.2f}, max {:.2f})  peak RSS {:>7.0f} MiB"
    for side in ("repro", "pytorch"):
        rates = speed[side]
        print(line.format(side, statistics.median(rates), min(rates), max(rates),
                          statistics.median(memory[side]) / MIB))
    ratio = statistics.median(speed["repro"]) / statistics.median(speed["pytorch"])
    paired = [r / p for r, p in zip(speed["repro"], speed["pytorch"])]
    print(f"  speed ratio repro / pytorch (medians): {ratio:.2f}")
    print("  paired ratios by round: " + " ".join(f"{r:.2f}" for r in paired)
          + f"  (median {statistics.median(paired):.2f})")
    memory_ratio = statistics.median(memory["repro"]) / statistics.median(memory["pytorch"])
    print(f"  peak memory ratio repro / pytorch (medians): {memory_ratio:.2f}")


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    directory = pathlib.Path(sys.argv[1])
    found = False
    for kind in ("ce", "de"):
        rounds = rounds_of(directory, kind)
        if not rounds:
            print(f"{kind}: no repro-{kind}-N.json in {directory}", file=sys.stderr)
            continue
        if found:
            print()
        table(directory, kind, rounds)
        found = True
    if not found:
        sys.exit(f"error: no repro-ce-N.json or repro-de-N.json in {directory}")


if __name__ == "__main__":
    main()
