"""Shared HL7 v2 sample messages for tests (fake patients only).

Files are ``tests/corpus/*.hl7``, CR-separated, except the names ending in
``_lf`` / ``_crlf`` which use those terminators on purpose (``.gitattributes``
keeps git from touching any of them). Every message carries distinctive fake
patient data listed in ``PATIENT_MARKERS`` so tests can assert that logs,
metrics and error texts never contain patient data.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CORPUS_DIR", "PATIENT_MARKERS", "SEED_MSH4", "load", "names", "seed_message"]

CORPUS_DIR = Path(__file__).resolve().parent

#: Strings that only occur in patient fields (PID/NK1/PV1 names, ids, address,
#: phone, document text). None of them can appear in MSH.
PATIENT_MARKERS: tuple[str, ...] = (
    "ZZTESTPATIENT",
    "ZZTESTFIRST",
    "ZZT0000001",
    "9990000018",
    "ZZTEST STREET",
    "ZZ99 9ZZ",
    "07700 900123",
    "ZZTESTNOK",
)

SEED_MSH4 = b"trustalias{trustalias}"

_SEED = (
    b"MSH|^~\\&|PAS|{msh4}|PKB|PKB|20240115103000||ADT^A01^ADT_A01|{control_id}|P|2.4\r"
    b"EVN|A01|20240115103000|||ZZU001^ADMIN^CLERK\r"
    b"PID|1||ZZT0000001^^^TRUST^MR~9990000018^^^NHS^NH||ZZTESTPATIENT^ZZTESTFIRST^^^MR||19700101|F|||"
    b"1 ZZTEST STREET^^ZZTESTTOWN^^ZZ99 9ZZ^GBR^H||07700 900123^PRN^CP|||S||V0000001^^^TRUST^VN\r"
    b"NK1|1|ZZTESTNOK^JOHN^^^MR|SPO^Spouse^HL70063|1 ZZTEST STREET^^ZZTESTTOWN^^ZZ99 9ZZ^GBR\r"
    b"PV1|1|I|WARD1^BAY1^BED1^TRUST||||C1234567^ZZDOCTOR^ALICE^^^DR|||MED||||19|||"
    b"C1234567^ZZDOCTOR^ALICE^^^DR|IP|V0000001^^^TRUST^VN|||||||||||||||||||||||||20240115103000\r"
)


def seed_message(msh4: bytes = SEED_MSH4, control_id: bytes = b"MSG00001") -> bytes:
    """The seed ADT^A01 (v2.4, CR-separated) with the given MSH-4 and MSH-10."""
    return _SEED.replace(b"{msh4}", msh4).replace(b"{control_id}", control_id)


def names() -> list[str]:
    """Corpus message names (file stems), sorted."""
    return sorted(p.stem for p in CORPUS_DIR.glob("*.hl7"))


def load(name: str) -> bytes:
    """Bytes of corpus message ``name`` (with or without ``.hl7``), exactly as stored."""
    stem = name[:-4] if name.endswith(".hl7") else name
    if stem not in names():
        raise KeyError(f"no corpus message named {stem!r}")
    return (CORPUS_DIR / f"{stem}.hl7").read_bytes()
