"""linepulse edge agent: read PLCs over OPC UA and Modbus, publish over MQTT, lose nothing."""

__version__ = "0.1.0"
