"""Reading recordings and hypnograms: EDF/EDF+/BDF/BDF+ signals, every hypnogram format,
and (in :mod:`engine.io.datasets`) pairing the two per dataset."""

from .edf import Annotation, ChannelInfo, Recording, open_recording, signal_file_family
from .hypnogram import FORMATS, Hypnogram, find_hypnogram, read_hypnogram

__all__ = [
    "Annotation",
    "ChannelInfo",
    "Recording",
    "open_recording",
    "signal_file_family",
    "FORMATS",
    "Hypnogram",
    "find_hypnogram",
    "read_hypnogram",
]
