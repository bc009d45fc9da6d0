"""Register <-> value decoding: known register patterns, errors, and round-trip properties."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.contract import Value
from edge_agent.decode import DATATYPES, decode_registers, encode_value, register_count
from edge_agent.errors import DecodeError

# (byte_order, word_order) of each classic layout name
ORDERS = {"ABCD": ("big", "big"), "BADC": ("little", "big"), "CDAB": ("big", "little"),
          "DCBA": ("little", "little")}  # fmt: skip

# datatype, value, {layout: registers}: the registers are written out by hand from the
# big-endian bytes of the value, not computed, so a wrong swap cannot hide.
WIDE = [
    ("float32", 123.456, {"ABCD": [0x42F6, 0xE979], "BADC": [0xF642, 0x79E9],
                          "CDAB": [0xE979, 0x42F6], "DCBA": [0x79E9, 0xF642]}),
    ("int32", -2, {"ABCD": [0xFFFF, 0xFFFE], "BADC": [0xFFFF, 0xFEFF],
                   "CDAB": [0xFFFE, 0xFFFF], "DCBA": [0xFEFF, 0xFFFF]}),
    ("uint32", 0x12345678, {"ABCD": [0x1234, 0x5678], "BADC": [0x3412, 0x7856],
                            "CDAB": [0x5678, 0x1234], "DCBA": [0x7856, 0x3412]}),
    ("int64", 0x0102030405060708,
     {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
      "CDAB": [0x0708, 0x0506, 0x0304, 0x0102], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("int64", -(2**63), {"ABCD": [0x8000, 0, 0, 0], "BADC": [0x0080, 0, 0, 0],
                         "CDAB": [0, 0, 0, 0x8000], "DCBA": [0, 0, 0, 0x0080]}),
    ("uint64", 0xFEDCBA9876543210,
     {"ABCD": [0xFEDC, 0xBA98, 0x7654, 0x3210], "BADC": [0xDCFE, 0x98BA, 0x5476, 0x1032],
      "CDAB": [0x3210, 0x7654, 0xBA98, 0xFEDC], "DCBA": [0x1032, 0x5476, 0x98BA, 0xDCFE]}),
    ("float64", 1.0, {"ABCD": [0x3FF0, 0, 0, 0], "BADC": [0xF03F, 0, 0, 0],
                      "CDAB": [0, 0, 0, 0x3FF0], "DCBA": [0, 0, 0, 0xF03F]}),
    ("float64", -2.5, {"ABCD": [0xC004, 0, 0, 0], "BADC": [0x04C0, 0, 0, 0],
                       "CDAB": [0, 0, 0, 0xC004], "DCBA": [0, 0, 0, 0x04C0]}),
]  # fmt: skip

WIDE_CASES = [
    pytest.param(dt, value, layout, regs, id=f"{dt}-{value}-{layout}")
    for dt, value, layouts in WIDE
    for layout, regs in layouts.items()
]


def f32(x: float) -> float:
    """x as a float32 holds it."""
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


@pytest.mark.parametrize(("datatype", "value", "layout", "regs"), WIDE_CASES)
def test_wide_types_in_every_order(
    datatype: str, value: float, layout: str, regs: list[int]
) -> None:
    byte_order, word_order = ORDERS[layout]
    got = decode_registers(regs, datatype=datatype, byte_order=byte_order, word_order=word_order)
    expected = f32(value) if datatype == "float32" else value
    assert got == expected
    assert type(got) is type(expected)
    assert (
        encode_value(value, datatype=datatype, byte_order=byte_order, word_order=word_order) == regs
    )


NARROW = [
    ("int16", [0xFFFF], "big", -1),
    ("int16", [0x8000], "big", -32768),
    ("int16", [0x7FFF], "big", 32767),
    ("int16", [0x3412], "little", 0x1234),
    ("uint16", [0xFFFF], "big", 65535),
    ("uint16", [0x0102], "little", 0x0201),
    ("bool", [0], "big", False),
    ("bool", [1], "big", True),
    ("bool", [0x8000], "big", True),
]


@pytest.mark.parametrize(("datatype", "regs", "byte_order", "value"), NARROW)
def test_one_register_types(datatype: str, regs: list[int], byte_order: str, value: Value) -> None:
    # word order cannot matter for one register
    for word_order in ("big", "little"):
        got = decode_registers(
            regs, datatype=datatype, byte_order=byte_order, word_order=word_order
        )
        assert got == value and type(got) is type(value)


STRINGS = [
    ([0x4142, 0x4344], "big", "ABCD"),
    ([0x4241, 0x4443], "little", "ABCD"),
    ([0x4142, 0x4300, 0x0000], "big", "ABC"),
    ([0x4241, 0x0043, 0x0000], "little", "ABC"),
    ([0x4142, 0x2020], "big", "AB"),
    ([0x2041, 0x0000], "big", " A"),  # leading spaces are data
    ([0x0000, 0x0000], "big", ""),
    ([0xC3A9, 0x0000], "big", "é"),
]


@pytest.mark.parametrize(("regs", "byte_order", "text"), STRINGS)
def test_strings(regs: list[int], byte_order: str, text: str) -> None:
    assert decode_registers(regs, datatype="string", byte_order=byte_order) == text
    # word order never reorders a string
    assert (
        decode_registers(regs, datatype="string", byte_order=byte_order, word_order="little")
        == text
    )


def test_string_encode_pads_with_nul() -> None:
    assert encode_value("ABC", datatype="string", length=3) == [0x4142, 0x4300, 0x0000]
    assert encode_value("ABC", datatype="string", length=2, byte_order="little") == [
        0x4241,
        0x0043,
    ]


@pytest.mark.parametrize(
    ("datatype", "regs", "scale", "offset", "value"),
    [
        ("int16", [0xFFFF], 0.1, 0.0, -0.1),
        ("uint16", [250], 0.1, -40.0, -15.0),
        ("uint16", [7], 1.0, 5.0, 12.0),
        ("int32", [0xFFFF, 0xFFFE], 2.0, 0.0, -4.0),
        ("float32", [0x42F6, 0xE979], 2.0, 1.0, f32(123.456) * 2 + 1),
    ],
)
def test_scale_and_offset_give_floats(
    datatype: str, regs: list[int], scale: float, offset: float, value: float
) -> None:
    got = decode_registers(regs, datatype=datatype, scale=scale, offset=offset)
    assert isinstance(got, float)
    assert math.isclose(got, value, rel_tol=1e-12)


def test_unscaled_integers_stay_int() -> None:
    assert decode_registers([250], datatype="uint16", scale=1, offset=0) == 250
    assert type(decode_registers([250], datatype="uint16")) is int


@pytest.mark.parametrize(
    ("regs", "datatype", "fragment"),
    [
        ([1], "float32", "needs 2 registers"),
        ([1, 2], "int16", "needs 1 registers"),
        ([1, 2, 3], "uint64", "needs 4 registers"),
        ([], "string", "length"),
        ([65536], "uint16", "0..65535"),
        ([-1], "int16", "0..65535"),
        (["1"], "uint16", "0..65535"),
        ([1.0], "uint16", "0..65535"),
        ([True], "bool", "0..65535"),
        ([0x7FC0, 0x0000], "float32", "not a finite number"),
        ([0x7F80, 0x0000], "float32", "not a finite number"),
        ([0xFF80, 0x0000], "float32", "not a finite number"),
        ([0x7FF8, 0, 0, 0], "float64", "not a finite number"),
        ([0xFFFE], "string", "0xFFFE"),
        ([0x41C3, 0x2800], "string", "not valid ASCII/UTF-8"),
        ([1], "real", "unknown datatype"),
    ],
)
def test_bad_registers_raise_decode_error(regs: list[int], datatype: str, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment) as info:
        decode_registers(regs, datatype=datatype)
    if datatype != "real":
        assert datatype in str(info.value)


def test_decode_error_names_the_raw_registers() -> None:
    with pytest.raises(DecodeError) as info:
        decode_registers([0x7FC0, 0x0000], datatype="float32")
    assert "0x7FC0, 0x0000" in str(info.value)


def test_scale_overflow_is_not_finite() -> None:
    regs = encode_value(1.7e308, datatype="float64")
    with pytest.raises(DecodeError, match="not a finite number"):
        decode_registers(regs, datatype="float64", scale=10.0)


def test_bad_orders_raise() -> None:
    with pytest.raises(DecodeError, match="byte_order"):
        decode_registers([1], datatype="uint16", byte_order="middle")
    with pytest.raises(DecodeError, match="word_order"):
        encode_value(1, datatype="uint16", word_order="mixed")


@pytest.mark.parametrize(
    ("value", "kwargs", "fragment"),
    [
        (40000, {"datatype": "int16"}, "outside"),
        (-1, {"datatype": "uint16"}, "outside"),
        (2**64, {"datatype": "uint64"}, "outside"),
        (1.5, {"datatype": "int32"}, "expected an integer"),
        ("7", {"datatype": "int32"}, "expected a number"),
        (None, {"datatype": "float32"}, "expected a number"),
        (1e39, {"datatype": "float32"}, "cannot encode"),
        ("ABCDE", {"datatype": "string", "length": 2}, "more than 2 registers"),
        (5, {"datatype": "string", "length": 2}, "expected a str"),
        ("A", {"datatype": "string"}, "length"),
        (1, {"datatype": "uint16", "length": 2}, "only to strings"),
        (1, {"datatype": "int16", "scale": 0.0}, "scale 0"),
    ],
)
def test_encode_errors(value: Value, kwargs: dict, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        encode_value(value, **kwargs)


def test_register_count() -> None:
    counts = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
              "int64": 4, "uint64": 4, "float64": 4}  # fmt: skip
    assert {dt: register_count(dt) for dt in counts} == counts
    assert register_count("string", 10) == 10
    with pytest.raises(DecodeError):
        register_count("string", 0)


# ---------------------------------------------------------------- properties

orders = st.sampled_from(["big", "little"])
INT_BOUNDS = {"int16": 15, "int32": 31, "int64": 63}


@st.composite
def int_cases(draw: st.DrawFn) -> tuple[str, int]:
    datatype = draw(st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64"]))
    bits = int(datatype.removeprefix("u").removeprefix("int"))
    if datatype.startswith("u"):
        return datatype, draw(st.integers(0, 2**bits - 1))
    return datatype, draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))


@given(int_cases(), orders, orders)
def test_integers_round_trip(case: tuple[str, int], byte_order: str, word_order: str) -> None:
    datatype, value = case
    regs = encode_value(value, datatype=datatype, byte_order=byte_order, word_order=word_order)
    assert len(regs) == register_count(datatype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    got = decode_registers(regs, datatype=datatype, byte_order=byte_order, word_order=word_order)
    assert got == value and type(got) is int


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), orders, orders)
def test_float32_round_trip(value: float, byte_order: str, word_order: str) -> None:
    kw: dict[str, Any] = {"datatype": "float32", "byte_order": byte_order, "word_order": word_order}
    assert decode_registers(encode_value(value, **kw), **kw) == value


@given(st.floats(allow_nan=False, allow_infinity=False), orders, orders)
def test_float64_round_trip(value: float, byte_order: str, word_order: str) -> None:
    kw: dict[str, Any] = {"datatype": "float64", "byte_order": byte_order, "word_order": word_order}
    assert decode_registers(encode_value(value, **kw), **kw) == value


@given(
    st.text(st.characters(codec="utf-8"), max_size=40).filter(
        lambda s: not s.endswith(("\x00", " "))
    ),
    orders,
    st.integers(0, 10),
)
def test_string_round_trip(text: str, byte_order: str, spare: int) -> None:
    length = max(1, (len(text.encode()) + 1) // 2 + spare)
    regs = encode_value(text, datatype="string", length=length, byte_order=byte_order)
    assert len(regs) == length
    assert decode_registers(regs, datatype="string", byte_order=byte_order) == text


@given(st.booleans())
def test_bool_round_trip(value: bool) -> None:
    assert decode_registers(encode_value(value, datatype="bool"), datatype="bool") is value


@given(
    st.sampled_from(["int16", "uint16", "int32", "uint32"]),
    st.integers(0, 30000),
    st.sampled_from([0.1, 0.01, 2.5, 10.0, -0.5]),
    st.sampled_from([0.0, -40.0, 273.15]),
)
def test_scaled_round_trip(datatype: str, raw: int, scale: float, offset: float) -> None:
    value = raw * scale + offset
    regs = encode_value(value, datatype=datatype, scale=scale, offset=offset)
    assert decode_registers(regs, datatype=datatype) == raw
    got = decode_registers(regs, datatype=datatype, scale=scale, offset=offset)
    assert isinstance(got, float) and math.isclose(got, value, rel_tol=1e-12, abs_tol=1e-9)


register_junk = st.one_of(
    st.integers(-10, 70_000), st.integers(0, 0xFFFF), st.floats(), st.text(max_size=2),
    st.none(), st.booleans(),
)  # fmt: skip


@given(
    st.lists(register_junk, max_size=130),
    st.sampled_from([*sorted(DATATYPES), "bogus"]),
    st.sampled_from(["big", "little", "middle"]),
    orders,
    st.sampled_from([1.0, 0.1, 1e308, -1e308]),
)
def test_arbitrary_registers_raise_only_decode_error(
    regs: list, datatype: str, byte_order: str, word_order: str, scale: float
) -> None:
    try:
        value = decode_registers(
            regs, datatype=datatype, byte_order=byte_order, word_order=word_order, scale=scale
        )
    except DecodeError:
        return
    assert value is None or isinstance(value, (bool, int, float, str))
    if isinstance(value, float):
        assert math.isfinite(value)


@given(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4), orders, orders)
def test_valid_registers_fail_only_as_non_finite_floats(
    regs: list[int], byte_order: str, word_order: str
) -> None:
    for datatype in sorted(DATATYPES - {"string"}):
        kw: dict[str, Any] = {
            "datatype": datatype,
            "byte_order": byte_order,
            "word_order": word_order,
        }
        try:
            value = decode_registers(regs[: register_count(datatype)], **kw)
        except DecodeError as err:
            assert datatype.startswith("float") and "not a finite number" in str(err)
        else:
            assert not isinstance(value, float) or math.isfinite(value)
