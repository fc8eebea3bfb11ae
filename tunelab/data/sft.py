"""Instruction, chat, prompt-completion and plain-text records for causal LM fine-tuning.

Every format becomes one of three shapes: a Conversation (role/content messages), a
Completion (raw prompt + completion) or a PlainText. Bad records are DataErrors naming the
file and the line (JSONL) or item (JSON array); nothing is skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.catalog import catalog_path
from tunelab.data.readers import json_lines
from tunelab.data.text import DEFAULT_ENCODING, parse_json, read_text, split_lines
from tunelab.errors import DataError

SFT_CATALOG = {
    "alpaca_en": "alpaca_demo/alpaca_en_demo.json",
    "alpaca_zh": "alpaca_demo/alpaca_zh_demo.json",
    "code_alpaca": "code_alpaca_2k/code_alpaca_2k.json",
    # unlabeled text for continued pretraining (data.blocks)
    "tinyshakespeare": "tinyshakespeare/input.txt",
    "wiki_demo": "pretrain_demo/wiki_demo.txt",
    "c4_demo": "pretrain_demo/c4_demo.jsonl",
}
ROLE_NAMES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
              "model": "assistant", "bot": "assistant", "system": "system"}
FORMATS = ("alpaca", "messages", "prompt_completion", "text")


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, str]]  # {"role": system|user|assistant, "content": ...}
    where: str


@dataclass(frozen=True)
class Completion:
    prompt: str
    completion: str
    where: str


@dataclass(frozen=True)
class PlainText:
    text: str
    where: str


Record = Conversation | Completion | PlainText


def resolve_sft_path(name: str) -> Path:
    if name.strip().lower() in SFT_CATALOG:
        return catalog_path(SFT_CATALOG[name.strip().lower()])
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found (catalog names: {', '.join(SFT_CATALOG)})")
    return path


def raw_records(path: Path, encoding: str = DEFAULT_ENCODING) -> list[tuple[dict[str, Any], str]]:
    """(record, where) pairs from a JSON array or JSON Lines file."""
    text = read_text(path, encoding)
    if text.lstrip().startswith("["):
        items = parse_json(text, str(path), line_of_error=True)
        if not isinstance(items, list):  # e.g. `[1] 2`: JSON, but not one array
            raise DataError(f"{path}: expected a JSON array of records")
        pairs = [(item, f"{path}[item {i}]") for i, item in enumerate(items)]
        for record, where in pairs:
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object")
    else:
        pairs = [(record, f"{path}:{line}") for line, record in json_lines(path, encoding)]
    if not pairs:
        raise DataError(f"{path}: no records found")
    return pairs


def detect_format(record: dict[str, Any], columns: dict[str, str], where: str) -> str:
    def has(key: str) -> bool:
        return columns.get(key, key) in record

    if has("instruction"):
        return "alpaca"
    if has("messages") or "conversations" in record:
        return "messages"
    if has("prompt") and has("completion"):
        return "prompt_completion"
    if has("text"):
        return "text"
    raise DataError(f"{where}: cannot tell the format from keys {sorted(record)}; set data.format "
                    f"({', '.join(FORMATS)}) and data.columns")


def to_record(raw: dict[str, Any], fmt: str, columns: dict[str, str], roles: dict[str, str],
              where: str) -> Record:
    def text(key: str, required: bool = True) -> str:
        name = columns.get(key, key)
        value = raw.get(name)
        if value is None or value == "":
            if required:
                raise DataError(f"{where}: missing or empty '{name}'"
                                + (f" (data.columns.{key})" if key not in columns else ""))
            return ""
        if not isinstance(value, str):
            raise DataError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
        return value

    if fmt == "alpaca":
        return Conversation(_alpaca_messages(raw, text, columns, where), where)
    if fmt == "messages":
        key = columns.get("messages", "messages" if "messages" in raw else "conversations")
        return Conversation(_messages(raw.get(key), {**ROLE_NAMES, **roles}, where, key), where)
    if fmt == "prompt_completion":
        return Completion(text("prompt"), text("completion"), where)
    return PlainText(text("text"), where)


def _alpaca_messages(raw: dict[str, Any], text, columns: dict[str, str], where: str
                     ) -> list[dict[str, str]]:
    """system?, history pairs, then instruction (+ a blank line + input, when given) -> output."""
    messages = []
    system = text("system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    history = raw.get(columns.get("history", "history")) or []
    if not isinstance(history, list) or any(
            not isinstance(p, (list, tuple)) or len(p) != 2 or not all(isinstance(x, str) for x in p)
            for p in history):
        raise DataError(f"{where}: 'history' must be a list of [user, assistant] string pairs")
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    prompt = text("instruction")
    extra = text("input", required=False)
    messages.append({"role": "user", "content": f"{prompt}\n\n{extra}" if extra else prompt})
    messages.append({"role": "assistant", "content": text("output")})
    return messages


def _messages(value: Any, roles: dict[str, str], where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: '{key}' must be a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"{where}: {key}[{i}] is not an object")
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        if not isinstance(role, str) or role not in roles:
            raise DataError(f"{where}: {key}[{i}] has role {role!r}; known roles: "
                            f"{', '.join(sorted(roles))} (map others with data.roles)")
        if not isinstance(content, str):
            raise DataError(f"{where}: {key}[{i}] has no text 'content' (or ShareGPT 'value')")
        out.append({"role": roles[role], "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: no assistant message, so nothing would train")
    return out


def text_documents(path: Path, split: str, encoding: str = DEFAULT_ENCODING) -> list[PlainText]:
    """A .txt file as documents: blank-line separated paragraphs, single lines, or the file."""
    text = read_text(path, encoding)
    if split == "file":
        chunks = [(1, text)]
    elif split == "line":
        chunks = list(enumerate(split_lines(text), 1))
    else:
        chunks, start, lines = [], 1, []
        for number, line in enumerate(split_lines(text), 1):
            if line.strip():
                start = start if lines else number
                lines.append(line)
            elif lines:
                chunks.append((start, "\n".join(lines)))
                lines = []
        if lines:
            chunks.append((start, "\n".join(lines)))
    docs = [(line, chunk.strip()) for line, chunk in chunks if chunk.strip()]
    if not docs:
        raise DataError(f"{path}: no text found")
    return [PlainText(doc, f"{path}:{line}") for line, doc in docs]


def load_records(path_or_name: str, fmt: str, columns: dict[str, str], roles: dict[str, str],
                 text_split: str = "paragraph", encoding: str = DEFAULT_ENCODING) -> list[Record]:
    path = resolve_sft_path(path_or_name)
    if path.suffix == ".txt":
        if fmt not in ("auto", "text"):
            raise DataError(f"{path}: a .txt file is plain text; set data.format to text or auto, "
                            f"not {fmt}")
        return list(text_documents(path, text_split, encoding))
    pairs = raw_records(path, encoding)
    chosen = fmt if fmt != "auto" else detect_format(pairs[0][0], columns, pairs[0][1])
    return [to_record(raw, chosen, columns, roles, where) for raw, where in pairs]
