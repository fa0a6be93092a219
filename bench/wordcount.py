"""WordCount: dalang's Wayang-style pipeline against a plain Python ``collections.Counter`` loop.

Run by hand, not in CI::

    python bench/wordcount.py            # ~50 MB of text
    python bench/wordcount.py --mb 5

The text (``bench/data/words-<mb>mb.txt``) is random words from a fixed
vocabulary with Zipf-like frequencies, seeded, so every run counts the same file.
Both sides read the file and count lower-cased words; the counts must be equal.
Target: dalang within 1.3x of the Counter loop. Results go to
``bench/results/wordcount.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from _common import DATA_DIR, fmt_ratio, fmt_seconds, machine_info, measure, median, write_json
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import dalang as dl

TARGET = 1.3
SEED = 42
VOCABULARY_SIZE = 5_000


def vocabulary() -> list[str]:
    """Fixed made-up words of 2..10 letters, some capitalised (the count lower-cases)."""
    rng = random.Random(SEED)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY_SIZE:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(2, 10))))
    out = sorted(words)
    rng.shuffle(out)
    return [w.capitalize() if i % 7 == 0 else w for i, w in enumerate(out)]


def generate(mb: float) -> Path:
    """``bench/data/words-<mb>mb.txt``: about ``mb`` megabytes of lines of 5..15 words."""
    path = DATA_DIR / f"words-{mb:g}mb.txt"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    words = vocabulary()
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf, exponent 1
    target = int(mb * 1_000_000)
    written = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        while written < target:
            lengths = [rng.randint(5, 15) for _ in range(10_000)]
            drawn = rng.choices(words, weights, k=sum(lengths))
            lines, i = [], 0
            for n in lengths:
                lines.append(" ".join(drawn[i : i + n]))
                i += n
            block = "\n".join(lines) + "\n"
            f.write(block)
            written += len(block)
    tmp.replace(path)
    return path


def counter_loop(path: Path) -> dict[str, int]:
    """What a Python programmer writes without a framework."""
    counts: Counter[str] = Counter()
    with path.open(encoding="utf-8") as f:
        for line in f:
            for word in line.split():
                counts[word.lower()] += 1
    return dict(counts)


def dalang_wordcount(ctx: dl.Context, path: Path) -> dict[str, int]:
    rows = (
        ctx.read_text(path)
        .flat_map(str.split)
        .map(lambda w: (w.lower(), 1))
        .reduce_by_key(lambda kv: kv[0], lambda a, b: (a[0], a[1] + b[1]))
        .collect()
    )
    return {word: n for word, n in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mb", type=float, default=50.0, help="size of the text in MB (default 50)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument(
        "--output", default="wordcount", help="name of the JSON file in bench/results"
    )
    args = parser.parse_args(argv)

    console = Console(width=None if sys.stdout.isatty() else 120)
    path = generate(args.mb)
    size_mb = path.stat().st_size / 1e6
    console.print(f"text: {path} ({size_mb:.1f} MB)")

    counter_runs, expected = measure(lambda: counter_loop(path), repeat=args.repeat)
    systems: dict[str, dict[str, Any]] = {
        "python Counter loop": {"median_s": median(counter_runs), "runs_s": counter_runs}
    }
    placement = ""
    with dl.Context(progress=False, history=False) as ctx:
        runs, got = measure(lambda: dalang_wordcount(ctx, path), repeat=args.repeat)
        if ctx.last_placed is not None:
            placed = ctx.last_placed
            from dalang.plan.nodes import walk_plan

            placement = ",".join(
                sorted({placed.platform_of(n).name for n in walk_plan(placed.root)})
            )
    equal = got == expected
    systems["dalang WordCount"] = {
        "median_s": median(runs),
        "runs_s": runs,
        "platforms": placement,
        "counts_equal": equal,
    }
    base = systems["python Counter loop"]["median_s"]
    for entry in systems.values():
        entry["ratio_vs_counter"] = entry["median_s"] / base
    ratio = systems["dalang WordCount"]["ratio_vs_counter"]

    table = Table(title=f"WordCount over {size_mb:.1f} MB, {sum(expected.values()):,} words")
    table.add_column("system")
    table.add_column("median", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("ratio vs Counter", justify="right")
    for name, entry in systems.items():
        table.add_row(
            name + (escape(f" [{placement}]") if name.startswith("dalang") else ""),
            fmt_seconds(entry["median_s"]),
            f"{size_mb / entry['median_s']:.1f}",
            fmt_ratio(entry["ratio_vs_counter"]),
        )
    console.print(table)
    style = "green" if ratio <= TARGET else "red"
    console.print(f"dalang / Counter: [{style}]{fmt_ratio(ratio)}[/{style}] (target <= {TARGET}x)")
    if not equal:
        missing = set(expected) ^ set(got)
        console.print(
            f"[red]counts differ: {len(missing)} words only on one side, "
            f"{sum(1 for w in expected if got.get(w) != expected[w])} counts unequal[/red]"
        )

    path_json = write_json(
        args.output,
        {
            "benchmark": "wordcount",
            "machine": machine_info(),
            "text_mb": size_mb,
            "words": sum(expected.values()),
            "distinct_words": len(expected),
            "repeat": args.repeat,
            "systems": systems,
            "summary": {
                "dalang_vs_counter": ratio,
                "target": TARGET,
                "within_target": bool(ratio <= TARGET),
                "counts_equal": equal,
            },
        },
    )
    console.print(f"wrote {path_json}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
