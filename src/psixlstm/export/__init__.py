"""Exports of trained students: Verilog-A for OpenVAF (ngspice OSDI, VACASK)."""

from .veriloga import VerilogAModel, emit_veriloga

__all__ = ["VerilogAModel", "emit_veriloga"]
