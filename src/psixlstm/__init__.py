"""psixlstm: device waveforms to SPICE-ready behavioral models.

Physics-informed xLSTM teacher -> structure discovery -> RRAD-distilled continuous-time students ->
Verilog-A compiled with OpenVAF and verified in ngspice and VACASK.
"""

__version__ = "0.1.0"
