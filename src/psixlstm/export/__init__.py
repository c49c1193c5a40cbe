"""Exports of trained students: Verilog-A for OpenVAF (ngspice OSDI, VACASK)."""

from .bundle import export_student
from .veriloga import VerilogAModel, emit_veriloga

__all__ = ["VerilogAModel", "emit_veriloga", "export_student"]
