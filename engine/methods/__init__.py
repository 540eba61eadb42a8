"""Methods by name. A new method (KD, DML, MAXL) is one module and one line here."""
from engine.methods.base import Method
from engine.methods.scratch import Scratch
from engine.methods.sskt import SSKT

METHODS: dict[str, type[Method]] = {"scratch": Scratch, "sskt": SSKT}


def build_method(cfg) -> Method:
    return METHODS[cfg.name](cfg)
