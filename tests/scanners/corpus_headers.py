"""Factories for the header-format test corpus: real files from the real libraries, hostile
variants made by editing their bytes (or, where no library writes the format, by a small encoder).

Nothing here loads a model: files are written, never read back through a loader.
"""

from __future__ import annotations

import io
import json
import marshal
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

# ---- real-world chat templates ------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

QWEN25_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \
\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful \
assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or \
(message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA31_TOOLS = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first \
user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ \
message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

DEEPSEEK_R1 = (
    "{% set ns = namespace(is_first=false, system_prompt='') %}{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<\uff5cUser\uff5c>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<\uff5cAssistant\uff5c>' + content + '<\uff5cend\u2581of\u2581sentence\uff5c>' }}"
    "{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<\uff5cAssistant\uff5c><think>\\n' }}{% endif %}"
)

# transformers' {% generation %} blocks and jinja's loop controls ({% break %})
SMOL_GENERATION = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] }}{% endgeneration %}{% else %}{{ message['content'] }}{% endif %}"
    "{% if loop.index > 10 %}{% break %}{% endif %}{% endfor %}"
)

REAL_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "llama31_tools": LLAMA31_TOOLS,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "qwen25_tools": QWEN25_TOOLS,
    "deepseek_r1": DEEPSEEK_R1,
    "generation_tags": SMOL_GENERATION,
}

# CVE-2024-34359 (llama-cpp-python), the published proof of concept.
CVE_2024_34359 = (
    '{% for x in ().__class__.__base__.__subclasses__() %}{% if "warning" in x.__name__ %}'
    "{{x()._module.__builtins__['__import__']('os').popen(\"touch /tmp/retr0reg\")}}"
    "{%endif%}{% endfor %}"
)

# ---- safetensors --------------------------------------------------------------------------------


def make_safetensors_torch(
    path: Path,
    tensors: Mapping[str, torch.Tensor] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A file written by `safetensors.torch.save_file`."""
    if tensors is None:
        tensors = {"weight": torch.ones(4, 3), "bias": torch.zeros(3)}
    safetensors.torch.save_file(dict(tensors), str(path), metadata=metadata)
    return path


def make_safetensors_numpy(
    path: Path,
    arrays: Mapping[str, np.ndarray[Any, Any]] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A file written by `safetensors.numpy.save_file`."""
    if arrays is None:
        arrays = {"embedding": np.arange(12, dtype=np.float32).reshape(3, 4)}
    safetensors.numpy.save_file(dict(arrays), str(path), metadata=metadata)
    return path


def write_safetensors_raw(path: Path, header: bytes | object, data: bytes = b"") -> Path:
    """A safetensors file from a header given as bytes or as a JSON value, then the data area."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, to edit."""
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    header: dict[str, Any] = json.loads(raw[8 : 8 + length])
    return header


def tensor_entry(dtype: str, shape: Sequence[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# ---- GGUF ---------------------------------------------------------------------------------------


def make_gguf(
    path: Path,
    *,
    templates: Mapping[str, str] | None = None,
    tensors: Mapping[str, np.ndarray[Any, Any]] | None = None,
    vocab_size: int = 64,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    alignment: int | None = None,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """A GGUF file written by gguf-py's GGUFWriter: llama metadata, a vocabulary, chat templates
    (key "" is `tokenizer.chat_template`, others `tokenizer.chat_template.<name>`), tensors."""
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    writer.add_name("tiny-test-model")
    writer.add_context_length(128)
    writer.add_block_count(1)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(vocab_size)])
    writer.add_token_scores([0.0] * vocab_size)
    writer.add_token_types([1] * vocab_size)
    for name, source in (templates if templates is not None else {"": CHATML}).items():
        key = "tokenizer.chat_template" + (f".{name}" if name else "")
        writer.add_string(key, source)
    if extra is not None:
        extra(writer)
    if tensors is None:
        tensors = {
            "token_embd.weight": np.ones((vocab_size, 32), dtype=np.float32),
            "output_norm.weight": np.ones(32, dtype=np.float16),
        }
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_string(text: str | bytes, width: str = "Q") -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<" + width, len(raw)) + raw


def encode_gguf(
    kvs: Sequence[bytes],
    tensor_infos: Sequence[bytes],
    *,
    version: int = 3,
    tensor_count: int | None = None,
    kv_count: int | None = None,
    data: bytes = b"",
    alignment: int = 32,
) -> bytes:
    """A GGUF from already-encoded KV pairs and tensor infos (for versions and lies GGUFWriter
    refuses to write); padding to `alignment`, then `data`."""
    width = "I" if version == 1 else "Q"
    head = b"GGUF" + struct.pack("<I", version)
    head += struct.pack("<" + width, len(tensor_infos) if tensor_count is None else tensor_count)
    head += struct.pack("<" + width, len(kvs) if kv_count is None else kv_count)
    body = head + b"".join(kvs) + b"".join(tensor_infos)
    if tensor_infos:
        body += b"\0" * (-len(body) % alignment)
    return body + data


def gguf_kv_string(key: str, value: str | bytes, width: str = "Q") -> bytes:
    return gguf_string(key, width) + struct.pack("<I", 8) + gguf_string(value, width)


def gguf_kv_u32(key: str, value: int, width: str = "Q") -> bytes:
    return gguf_string(key, width) + struct.pack("<II", 4, value)


def gguf_tensor_info(
    name: str, dims: Sequence[int], ggml_type: int, offset: int, width: str = "Q"
) -> bytes:
    info = gguf_string(name, width) + struct.pack("<I", len(dims))
    info += b"".join(struct.pack("<" + width, d) for d in dims)
    return info + struct.pack("<IQ", ggml_type, offset)


def find_after(blob: bytes, needle: bytes) -> int:
    """Offset just after the first occurrence of `needle` (to patch the bytes that follow)."""
    index = blob.index(needle)
    return index + len(needle)


# ---- Keras --------------------------------------------------------------------------------------


def keras_layer(
    class_name: str,
    config: dict[str, Any] | None = None,
    module: str | None = "keras.layers",
    registered_name: str | None = None,
) -> dict[str, Any]:
    return {
        "module": module,
        "class_name": class_name,
        "config": {"name": class_name.lower(), "trainable": True, "dtype": "float32"}
        | (config or {}),
        "registered_name": registered_name,
    }


def keras_config(layers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A Keras 3 `config.json` for a Sequential model with the given layer configs."""
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "dtype": {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": "float32"},
                "registered_name": None,
            },
            "layers": [
                keras_layer("InputLayer", {"batch_shape": [None, 4], "sparse": False}),
                *layers,
            ],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": {
            "optimizer": {
                "module": "keras.optimizers",
                "class_name": "Adam",
                "config": {"name": "adam", "learning_rate": 0.001},
                "registered_name": None,
            },
            "loss": "mse",
        },
    }


def dense(units: int = 2) -> dict[str, Any]:
    return keras_layer("Dense", {"units": units, "activation": "relu", "use_bias": True})


def lambda_code(function: Callable[..., Any]) -> str:
    """Keras' `func_dump`: the function's code object, marshalled and base64-encoded."""
    import base64

    return base64.b64encode(marshal.dumps(function.__code__)).decode("ascii")


def keras3_lambda(function: Callable[..., Any]) -> dict[str, Any]:
    return keras_layer(
        "Lambda",
        {
            "function": {
                "class_name": "__lambda__",
                "config": {"value": lambda_code(function), "defaults": None, "closure": None},
            },
            "arguments": {},
        },
    )


def make_keras_zip(
    path: Path,
    config: object,
    *,
    extra_members: Sequence[tuple[str, bytes]] = (),
    with_config: bool = True,
) -> Path:
    """A `.keras` archive laid out as Keras 3 saves it: config.json, metadata.json and the
    weights (an empty placeholder: scanners never read them)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        if with_config:
            archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
        for name, data in extra_members:
            archive.writestr(name, data)
    return path


# ---- ONNX (protobuf wire format) ----------------------------------------------------------------


def pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_field(number: int, payload: bytes | str | int) -> bytes:
    """One protobuf field: varint for ints, length-delimited for bytes and strings."""
    if isinstance(payload, int):
        return pb_varint(number << 3) + pb_varint(payload)
    raw = payload.encode() if isinstance(payload, str) else payload
    return pb_varint(number << 3 | 2) + pb_varint(len(raw)) + raw


def onnx_tensor(name: str, *, location: str | None = None, raw: bytes = b"\0" * 16) -> bytes:
    """A TensorProto: dims 4 (field 1), FLOAT (2), name (8), raw_data (9) or external data (13)."""
    tensor = pb_field(1, 4) + pb_field(2, 1) + pb_field(8, name)
    if location is None:
        return tensor + pb_field(9, raw)
    entries = [("location", location), ("offset", "0"), ("length", "16")]
    for key, value in entries:
        tensor += pb_field(13, pb_field(1, key) + pb_field(2, value))
    return tensor + pb_field(14, 1)


def onnx_node(op_type: str, *, domain: str = "", attributes: Sequence[bytes] = ()) -> bytes:
    node = pb_field(1, "x") + pb_field(2, "y") + pb_field(3, f"{op_type}_0") + pb_field(4, op_type)
    node += b"".join(pb_field(5, a) for a in attributes)
    return node + (pb_field(7, domain) if domain else b"")


def onnx_graph(nodes: Sequence[bytes] = (), initializers: Sequence[bytes] = ()) -> bytes:
    graph = b"".join(pb_field(1, n) for n in nodes) + pb_field(2, "main")
    return graph + b"".join(pb_field(5, t) for t in initializers)


def onnx_model(
    graph: bytes,
    *,
    opsets: Sequence[tuple[str, int]] = (("", 17),),
    functions: Sequence[bytes] = (),
) -> bytes:
    """A ModelProto: ir_version (1), producer (2), graph (7), opset_import (8), functions (25)."""
    model = pb_field(1, 8) + pb_field(2, "hubwarden-tests") + pb_field(7, graph)
    model += b"".join(pb_field(8, pb_field(1, d) + pb_field(2, v)) for d, v in opsets)
    return model + b"".join(pb_field(25, f) for f in functions)


def onnx_function(name: str, domain: str, nodes: Sequence[bytes]) -> bytes:
    """A FunctionProto: name (1), node (7), domain (10)."""
    return pb_field(1, name) + b"".join(pb_field(7, n) for n in nodes) + pb_field(10, domain)


def onnx_attribute_graph(name: str, graph: bytes) -> bytes:
    """An AttributeProto of type GRAPH: name (1), g (6), type (20) = 5."""
    return pb_field(1, name) + pb_field(6, graph) + pb_field(20, 5)


def zip_bytes(members: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:  # a fixed date: the same bytes on every run
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()
