"""Ground-truth devices: the three-tau memristor (NumPy + Verilog-A twins), the paper's VTEAM memristor, and the
BSIM4 MOSFET and Gummel-Poon BJT run in ngspice."""

from . import memristor, vteam
from .spice_reference import BJT, MOSFET, SpiceReferenceDevice

__all__ = ["BJT", "MOSFET", "SpiceReferenceDevice", "memristor", "vteam"]
