"""Regenerate the redirect-mode sample (seeded: the same files every time).

    python sample_logs/redirect-mode/generate.py

One day (2024-11-12, UTC) of a small redirect-mode mirror from the labelled scenario generator
(sample_logs/scenarios.py, ``generate_redirect``): CRProxy answers every blob GET with a 307 to a
signed object-storage URL, so ``access.log`` (nginx ``main``) holds the redirects' few hundred
bytes and the bytes are in the stores' logs — a bucket in the S3 log layout whose links carry
CRProxy's referer (Huawei OBS writes that layout) and an OSS bucket, each serving the clients of
its region, one log object an hour named as each store names them; beside the downloads, the
mirror's own ListObjects before each redirect and PUTs. Among the clients: a reseller handing its
signed URLs to customers in other networks, who fetch them up to 19 minutes later
(``redirect-relay``), a dual-stack host whose IPv4 asks and IPv6 downloads, a company asking from
one /24 and downloading from another of the same ASN, a few direct reads of the bucket, the
operator's backup job reading fresh blobs with its own key, light users, an office and a k8s
cluster. ``truth.yml`` says what was really served: the totals and, per requesting address, its
bytes (tests/test_redirect_mode.py holds pullwarden to it).

The day is eight days before the other samples' (2024-11-20), outside every detection window of a
replay judged at their newest event.
"""
from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import yaml

from sample_logs.scenarios import asn_networks, generate_redirect

HERE = Path(__file__).parent
START = datetime(2024, 11, 12, tzinfo=UTC)
SEED = 13
SCALE = 0.05
KINDS = {"light", "office-nat", "k8s-cluster", "redirect-relay", "split-egress-v6", "split-egress-corp",
         "direct-read", "backup"}
STORES = ("s3", "oss")


def names(store: str, hour: datetime, rng: random.Random) -> str:
    """A log object's name as the store gives it (S3: prefix + time + a unique string; OSS: prefix +
    bucket + time + a sequence number)."""
    if store == "s3":
        return f"mirror-blobs-logs/{hour:%Y-%m-%d-%H-%M-%S}-{rng.getrandbits(64):016X}"
    return f"MyLog-mirror-blobs{hour:%Y-%m-%d-%H-%M-%S}-0001"


def main() -> None:
    lines, objects, actors, truth = generate_redirect(days=1, start=START, seed=SEED, scale=SCALE, kinds=KINDS,
                                                      stores=STORES)
    (HERE / "access.log").write_text("\n".join(lines) + "\n")
    rng = random.Random(SEED)
    for store in STORES:
        shutil.rmtree(HERE / store, ignore_errors=True)
        hours: dict[datetime, list[str]] = {}
        for row, line in zip(truth.rows[store], objects[store], strict=True):
            hours.setdefault(row["ts"].replace(minute=0, second=0), []).append(line)
        for hour, chunk in sorted(hours.items()):
            path = HERE / store / names(store, hour, rng)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(chunk) + "\n")
    # YAML, not .json: a directory walk reads *.json as logs
    (HERE / "truth.yml").write_text(yaml.safe_dump({
        "start": START.isoformat(), "seed": SEED, "scale": SCALE, "kinds": sorted(KINDS), "stores": list(STORES),
        "proxy_bytes": truth.proxy_bytes, "redirect_bytes": truth.redirect_bytes,
        "object_bytes": truth.object_bytes, "unjoined_bytes": truth.unjoined_bytes, "listings": truth.listings,
        "served": dict(sorted(truth.served.items())),
        "actors": [{"name": a.name, "kind": a.kind, "abusive": a.abusive, "addresses": a.addresses,
                    "relayed_to": a.relayed_to} for a in actors],
        "asn_networks": asn_networks()}, sort_keys=False, width=120))


if __name__ == "__main__":
    main()
