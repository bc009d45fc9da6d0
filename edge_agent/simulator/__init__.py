"""``linepulse simulate``: a simulated packaging line served over OPC UA and Modbus TCP.

Four machines (filler → capper → labeler → packer) with PLC state codes, part counters
(the filler's wraps at 16 bits), reject counters per reason on the first three (the
labeler's wrap at 16 bits), noisy analogs and product strings. ``line.py`` says what
the line is, ``model.py`` runs it (pure and seeded), ``script.py`` steers it in time,
``tags.py`` maps it to OPC UA nodes and Modbus addresses (documented as tables in
``opcua_server.py`` and ``modbus_server.py``), and ``runner.py`` serves it. Importing
this package does not import asyncua or pymodbus.
"""

from edge_agent.simulator.line import (
    DEFAULT_LINE,
    STATE_CODES,
    Code,
    MachineSpec,
    SimulatorError,
)
from edge_agent.simulator.model import LineModel, LineSnapshot, MachineSnapshot
from edge_agent.simulator.runner import Simulator, add_arguments, main, run_simulator
from edge_agent.simulator.script import Action, Script, ScriptError, load_script, parse_script
from edge_agent.simulator.tags import MODBUS_POINTS, NAMESPACE_URI, OPCUA_POINTS

__all__ = [
    "DEFAULT_LINE",
    "MODBUS_POINTS",
    "NAMESPACE_URI",
    "OPCUA_POINTS",
    "STATE_CODES",
    "Action",
    "Code",
    "LineModel",
    "LineSnapshot",
    "MachineSnapshot",
    "MachineSpec",
    "Script",
    "ScriptError",
    "Simulator",
    "SimulatorError",
    "add_arguments",
    "load_script",
    "main",
    "parse_script",
    "run_simulator",
]
