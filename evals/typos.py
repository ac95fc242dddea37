#!/usr/bin/env python3
"""Print a labelled set with one typo in each question: how much a slip of the finger costs.

Each question gets one edit (two letters swapped, one dropped, one doubled or one replaced)
in one of its words of five or more letters, chosen with a fixed seed, so the variant of a
set is the same on every run. Expected ids and splits are kept. Only tuning questions (dev,
dev2, dev3) are printed: a typo variant of a test or hold-out question is that question.

Usage: python3 evals/typos.py evals/gcp_roles_dev3.jsonl > /tmp/gcp_roles_dev3.typos.jsonl
"""
import json, random, re, sys

COMMON = set("the and for with that this from into have need want what which who can our your "
             "their they them about when where should would could".split())


TUNING = {"dev", "dev2", "dev3"}


def typo(question, rng):
    words = [m for m in re.finditer(r"[A-Za-z]{5,}", question) if m.group().lower() not in COMMON]
    if not words:
        return question
    m = rng.choice(words)
    w, i = m.group(), rng.randrange(1, len(m.group()) - 1)
    op = rng.choice(["swap", "drop", "double", "replace"])
    if op == "swap":
        w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    elif op == "drop":
        w = w[:i] + w[i + 1:]
    elif op == "double":
        w = w[:i] + w[i] + w[i:]
    else:
        w = w[:i] + rng.choice("aeiourstnl") + w[i + 1:]
    return question[:m.start()] + w + question[m.end():]


def main(path):
    rng = random.Random(16)
    with open(path, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            if o["split"] not in TUNING:
                continue
            o["q"] = typo(o["q"], rng)
            print(json.dumps(o))


if __name__ == "__main__":
    main(sys.argv[1])
