#!/usr/bin/env python3
"""Check the hand-written retrieval eval sets against the IAM corpora.

Run from the repository root:  python3 evals/check.py
Optional: --corpora DIR (default: ../shared/corpora relative to the repo root).

Checks, per set:
  * every line is a JSON object with exactly the keys q, expect, split;
  * q is a non-empty string, expect a non-empty list of unique strings;
  * every expected id exists exactly (case-sensitive) in the corpus;
  * the set has its size (80; the Azure set 60), no duplicate questions;
  * split follows the fixed rule (line 1 dev, line 2 test, line 3 dev, ...),
    which gives exactly half dev, half test;
  * the sets written later by another hand (hold-out: 40, dev2: 60, hold-out 2: 50,
    hold-out 3: 50; the catch-all tuning sets: 8; hold-out 4: 50; dev3: 80; hold-out 5: 50;
    plain: 57 GCP, 59 AWS)
    have their size, one split name on every line, and no question of a set checked
    before them.
It also warns (without failing) when an expected id is a non-GA GCP role or a
deprecated AWS policy. Stdlib only.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SETS = [
    # (eval file, corpus file, id field in the corpus, its size, [(set written later by another hand,
    #  its one split name, its size)])
    ("gcp_roles.jsonl", "gcp_roles.jsonl", "id", 80,
     [("gcp_roles_holdout.jsonl", "holdout", 40), ("gcp_roles_dev2.jsonl", "dev2", 60),
      ("gcp_roles_holdout2.jsonl", "holdout2", 50), ("gcp_roles_holdout3.jsonl", "holdout3", 50),
      ("gcp_roles_catchall.jsonl", "catchall", 8), ("gcp_roles_holdout4.jsonl", "holdout4", 50),
      ("gcp_roles_dev3.jsonl", "dev3", 80), ("gcp_roles_holdout5.jsonl", "holdout5", 50),
      ("gcp_roles_plain.jsonl", "plain", 57)]),
    ("aws_policies.jsonl", "aws_managed_policies.jsonl", "name", 80,
     [("aws_policies_holdout.jsonl", "holdout", 40), ("aws_policies_dev2.jsonl", "dev2", 60),
      ("aws_policies_holdout2.jsonl", "holdout2", 50), ("aws_policies_holdout3.jsonl", "holdout3", 50),
      ("aws_policies_catchall.jsonl", "catchall", 8), ("aws_policies_holdout4.jsonl", "holdout4", 50),
      ("aws_policies_dev3.jsonl", "dev3", 80), ("aws_policies_holdout5.jsonl", "holdout5", 50),
      ("aws_policies_plain.jsonl", "plain", 59)]),
    # Written by a second author who saw no ranking code and ran no search; split by position.
    ("azure_roles.jsonl", "azure_builtin_roles.jsonl", "id", 60, []),
]


def load_corpus(path, id_field):
    ids = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            ids[rec[id_field]] = rec
    return ids


def expected_split(lineno):
    return "dev" if lineno % 2 == 1 else "test"


def check_set(eval_path, corpus, errors, warnings, size, extra_of=None, extra_split=None):
    """extra_of: the questions of the sets checked before, when eval_path is a later set
    whose lines all have split `extra_split`."""
    name = os.path.basename(eval_path)
    counts = {extra_split: 0} if extra_of is not None else {"dev": 0, "test": 0}
    seen_q = set(extra_of or ())
    n = 0
    with open(eval_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        where = f"{name}:{lineno}"
        if not line.strip():
            errors.append(f"{where}: blank line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: invalid JSON ({e})")
            continue
        n += 1
        if not isinstance(obj, dict) or set(obj) != {"q", "expect", "split"}:
            errors.append(f"{where}: want an object with keys q, expect, split; got {obj!r}")
            continue
        q, expect, split = obj["q"], obj["expect"], obj["split"]
        if not isinstance(q, str) or not q.strip():
            errors.append(f"{where}: q must be a non-empty string")
        elif q.strip().lower() in seen_q:
            errors.append(f"{where}: duplicate question {q!r}")
        else:
            seen_q.add(q.strip().lower())
        if not isinstance(expect, list) or not expect or not all(isinstance(x, str) for x in expect):
            errors.append(f"{where}: expect must be a non-empty list of strings")
        else:
            if len(set(expect)) != len(expect):
                errors.append(f"{where}: duplicate ids in expect")
            for rid in expect:
                rec = corpus.get(rid)
                if rec is None:
                    errors.append(f"{where}: id not in corpus: {rid!r}")
                    continue
                if rec.get("stage") not in (None, "GA"):
                    warnings.append(f"{where}: {rid} has stage {rec['stage']}")
                if rec.get("deprecated"):
                    warnings.append(f"{where}: {rid} is marked deprecated")
        if split not in counts:
            errors.append(f"{where}: split must be one of {sorted(counts)}, got {split!r}")
        else:
            counts[split] += 1
            if extra_of is None and split != expected_split(lineno):
                errors.append(f"{where}: split {split!r} breaks the fixed rule (want {expected_split(lineno)!r})")
    want = size
    if n != want:
        errors.append(f"{name}: {n} questions, want {want}")
    if extra_of is None and (counts["dev"] != want // 2 or counts["test"] != want // 2):
        errors.append(f"{name}: split is {counts['dev']} dev / {counts['test']} test, want {want // 2}/{want // 2}")
    return n, counts, seen_q


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default=os.path.join(REPO, "..", "shared", "corpora"))
    args = ap.parse_args()
    errors, warnings = [], []
    for eval_file, corpus_file, id_field, size, later in SETS:
        corpus_path = os.path.join(args.corpora, corpus_file)
        eval_path = os.path.join(HERE, eval_file)
        if not os.path.exists(corpus_path):
            errors.append(f"corpus not found: {corpus_path}")
            continue
        corpus = load_corpus(corpus_path, id_field)
        n, counts, questions = check_set(eval_path, corpus, errors, warnings, size)
        print(f"{eval_file}: {n} questions, {counts['dev']} dev / {counts['test']} test "
              f"(corpus {corpus_file}: {len(corpus)} records)")
        for later_file, split, size in later:
            n, _, more = check_set(os.path.join(HERE, later_file), corpus, errors, warnings, size, questions, split)
            questions |= more
            print(f"{later_file}: {n} questions, split {split}")
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"FAILED: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
