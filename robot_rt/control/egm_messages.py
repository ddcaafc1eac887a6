"""ABB EGM message classes for the protobuf runtime, built from robot_rt/control/egm.proto (docs/egm.md).

No protoc step: the .proto (proto2: messages, nested enums, optional/required/repeated fields, `[default = X]`) is
read by the small parser below into a FileDescriptorProto and the protobuf runtime makes the classes. Used by the
simulated EGM controller (robot_rt.sim.egm_controller) and the tests that compare the C++ codec with protobuf; the
real-time driver (C++ EgmDriver) does not use it.

    from robot_rt.control.egm_messages import egm_classes
    EgmRobot, EgmSensor = egm_classes()["EgmRobot"], egm_classes()["EgmSensor"]
"""

from __future__ import annotations

import functools
import re
from importlib import resources

PROTO_FILE = "egm.proto"
_SCALARS = {
    "double": 1,
    "float": 2,
    "int64": 3,
    "uint64": 4,
    "int32": 5,
    "bool": 8,
    "string": 9,
    "bytes": 12,
    "uint32": 13,
    "sint32": 17,
    "sint64": 18,
}
_LABELS = {"optional": 1, "required": 2, "repeated": 3}
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|-?\d+|[{}=;\[\]]")


def proto_text() -> str:
    return resources.files("robot_rt.control").joinpath(PROTO_FILE).read_text()


def _tokens(text: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"[^"]*"', "STRING", text)
    return _TOKEN.findall(text)


def parse_proto(text: str):
    """FileDescriptorProto of a proto2 file in the subset egm.proto uses; ValueError naming the token otherwise."""
    from google.protobuf import descriptor_pb2

    tokens = _tokens(text)
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"text: unexpected end of the .proto (expected {expected or 'a token'})")
        tok = tokens[pos]
        pos += 1
        if expected is not None and tok != expected:
            raise ValueError(f"text: expected {expected!r}, got {tok!r} (token {pos})")
        return tok

    fdp = descriptor_pb2.FileDescriptorProto(name=PROTO_FILE, syntax="proto2")
    enum_names: set[str] = set()

    def parse_enum(into) -> None:
        enum = into.add(name=take())
        take("{")
        while tokens[pos] != "}":
            name = take()
            take("=")
            enum.value.add(name=name, number=int(take()))
            take(";")
        take("}")

    def parse_message(into, scope: str) -> None:
        msg = into.add(name=take())
        take("{")
        while tokens[pos] != "}":
            word = take()
            if word == "enum":
                enum_names.add(f"{scope}.{msg.name}.{tokens[pos]}")
                parse_enum(msg.enum_type)
                continue
            if word == "message":
                parse_message(msg.nested_type, f"{scope}.{msg.name}")
                continue
            if word not in _LABELS:
                raise ValueError(f"text: field label expected in message {msg.name}, got {word!r}")
            type_name, name = take(), take()
            take("=")
            field = msg.field.add(name=name, number=int(take()), label=_LABELS[word])
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:  # resolved after parsing (message or enum)
                field.type_name = type_name
                field.json_name = f"{scope}.{msg.name}"  # temporary: the scope the name is looked up from
            if tokens[pos] == "[":
                take("[")
                take("default")
                take("=")
                field.default_value = take()
                take("]")
            take(";")
        take("}")

    while pos < len(tokens):
        word = take()
        if word == "syntax":
            take("=")
            if take() != "STRING":
                raise ValueError("text: syntax must be a string")
            take(";")
        elif word == "package":
            fdp.package = take()
            take(";")
        elif word == "message":
            parse_message(fdp.message_type, "")
        elif word == "enum":
            enum_names.add(f".{tokens[pos]}")
            parse_enum(fdp.enum_type)
        else:
            raise ValueError(f"text: unexpected {word!r} at the top level")

    package = f".{fdp.package}" if fdp.package else ""
    message_names = set()

    def collect(messages, scope: str) -> None:
        for m in messages:
            message_names.add(f"{scope}.{m.name}")
            collect(m.nested_type, f"{scope}.{m.name}")

    collect(fdp.message_type, "")

    def resolve(messages) -> None:
        for m in messages:
            for f in m.field:
                if not f.type_name:
                    continue
                scope = f.json_name
                f.ClearField("json_name")
                parts = scope.split(".")
                for cut in range(len(parts), 0, -1):  # innermost scope first, like protoc
                    candidate = ".".join(parts[:cut]) + "." + f.type_name
                    if candidate in enum_names:
                        f.type, f.type_name = 14, package + candidate
                        break
                    if candidate in message_names:
                        f.type, f.type_name = 11, package + candidate
                        break
                else:
                    raise ValueError(f"text: unknown type {f.type_name!r} of field {m.name}.{f.name}")
            resolve(m.nested_type)

    resolve(fdp.message_type)
    return fdp


@functools.cache
def egm_classes() -> dict:
    """{message name: class} for every top-level message of egm.proto (protobuf runtime; own descriptor pool)."""
    try:
        from google.protobuf import descriptor_pool, message_factory
    except ImportError as err:  # pragma: no cover - protobuf is a dependency of the project
        raise ImportError("robot_rt.control.egm_messages needs protobuf: pip install protobuf") from err
    fdp = parse_proto(proto_text())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    file_desc = pool.FindFileByName(PROTO_FILE)
    return {name: message_factory.GetMessageClass(desc) for name, desc in file_desc.message_types_by_name.items()}
