"""OpenAI-compatible routes on the REST frontend, for the repository's generative models
(server/generative/model.py: the synthetic LLM and the trained tiny LM alike).

``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/completions`` and ``POST /v1/chat/completions``,
each non-streaming (one JSON body) or with ``"stream": true`` (Server-Sent Events: one ``data: {chunk}``
event per token, written when the scheduler yields it, then ``data: [DONE]``; with
``stream_options.include_usage`` a usage chunk with empty ``choices`` comes before ``[DONE]`` and the other
chunks carry ``"usage": null``). As vLLM, the last token's chunk carries ``finish_reason``; the chat stream
opens with a ``{"role": "assistant", "content": ""}`` delta; ``ignore_eos`` and
``stream_options.continuous_usage_stats`` are honoured. Errors answer OpenAI's body,
``{"error": {"message", "type", "param", "code"}}``. Served one prompt and one choice per request: several
prompts, ``n`` > 1 and ``echo`` are refused (400). Sampling fields (temperature, top_p, stop, logprobs, ...)
are accepted and have no effect on the synthetic text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tailmark.server import errors
from tailmark.server.generative.model import GenerativeModel

OWNED_BY = "tailmark"


@dataclass
class EventStream:
    """An answer written as it is produced (chunked transfer encoding), one chunk per event."""

    chunks: AsyncIterator[bytes]
    content_type: bytes = b"text/event-stream"


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def body(self) -> bytes:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return error_body(str(self), kind, param=self.param, code=self.code)


def error_body(message: str, kind: str = "invalid_request_error", *, param=None, code=None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def _dumps(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def route(core, method: bytes, parts: list[str], body: bytes) -> tuple[int, list, bytes | EventStream]:
    """Answer one request under ``/v1``: (status, extra headers, body or event stream)."""
    try:
        if parts[1:2] == ["models"] and len(parts) <= 3 and method == b"GET":
            models = _generative_models(core)
            if len(parts) == 2:
                return 200, [], _dumps({"object": "list", "data": [_model_card(*m) for m in models.items()]})
            if parts[2] not in models:
                raise OpenAIError(404, f"The model `{parts[2]}` does not exist.", code="model_not_found")
            return 200, [], _dumps(_model_card(parts[2], models[parts[2]]))
        chat = parts[1:] == ["chat", "completions"]
        if (chat or parts[1:] == ["completions"]) and method == b"POST":
            return await _generate(core, body, chat)
        raise OpenAIError(404, f"Invalid URL ({method.decode()} /{'/'.join(parts)})")
    except OpenAIError as exc:
        return exc.status, [], exc.body()


def _generative_models(core) -> dict[str, GenerativeModel]:
    models = {}
    for entry in core.repository.models.values():
        if entry.ready:
            backend = entry.versions[max(entry.versions, key=int)].backend
            if isinstance(backend, GenerativeModel):
                models[entry.name] = backend
    return models


def _model_card(name: str, backend: GenerativeModel) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": OWNED_BY,
        "max_model_len": backend.max_model_len,
    }


def _model(core, name) -> tuple:
    if not isinstance(name, str) or not name:
        raise OpenAIError(400, "'model' must be a non-empty string", param="model")
    try:
        loaded = core.repository.get(name)
    except errors.ModelNotFound:
        raise OpenAIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found") from None
    except errors.ModelUnavailable as exc:
        raise OpenAIError(503, str(exc), param="model") from None
    if not isinstance(loaded.backend, GenerativeModel):
        message = f"The model `{name}` is not a generative model (it serves /v2/models/{name}/infer)."
        raise OpenAIError(404, message, param="model", code="model_not_found")
    return loaded, loaded.backend


def _get(document: dict, name: str, kind: type | tuple, default=None):
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise OpenAIError(400, f"'{name}' must be {names.replace('str', 'a string').replace('int', 'an integer')}",
                          param=name)  # fmt: skip
    return value


def _completion_prompt(document: dict) -> str | list[int]:
    """A completions ``prompt``: text, or token ids."""
    prompt = document.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # one prompt in a list
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    if isinstance(prompt, list):
        raise OpenAIError(400, "one prompt per request is served (a string or a list of token ids)", param="prompt")
    raise OpenAIError(400, "'prompt' must be a string or a list of token ids", param="prompt")


def _chat_prompt(document: dict) -> str:
    """The prompt text: the messages as one line "role: content" each."""
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "'messages' must be a non-empty list", param="messages")
    lines = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise OpenAIError(400, f"messages[{index}] must be an object with a 'role'", param="messages")
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise OpenAIError(400, f"messages[{index}]: only text content parts are served", param="messages")
                texts.append(part["text"])
            content = "\n".join(texts)
        elif content is not None and not isinstance(content, str):
            raise OpenAIError(400, f"messages[{index}].content must be a string or a list of parts", param="messages")
        lines.append(f"{message['role']}: {content or ''}")
    return "\n".join(lines)


@dataclass
class _Request:
    model: str
    chat: bool
    stream: bool
    include_usage: bool
    continuous_usage: bool
    prompt_tokens: int


async def _generate(core, body: bytes, chat: bool) -> tuple[int, list, bytes | EventStream]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; RecursionError: nested too deep
        raise OpenAIError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    name = document.get("model")
    loaded, backend = _model(core, name)
    prompt = _chat_prompt(document) if chat else _completion_prompt(document)
    prompt_tokens = backend.count_prompt(prompt)
    if _get(document, "n", int, 1) != 1:
        raise OpenAIError(400, "only n=1 is served", param="n")
    if _get(document, "echo", bool, False):
        raise OpenAIError(400, "echo is not served", param="echo")
    stream = _get(document, "stream", bool, False)
    options = _get(document, "stream_options", dict)
    if options is not None and not stream:
        raise OpenAIError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options")
    options = options or {}
    newer = chat and document.get("max_completion_tokens") is not None  # chat's newer name wins
    limit_field = "max_completion_tokens" if newer else "max_tokens"
    max_tokens = _get(document, limit_field, int)
    room = backend.max_model_len - prompt_tokens
    if max_tokens is None:
        max_tokens = min(backend.default_max_tokens, room)
    elif max_tokens < 1:
        raise OpenAIError(400, f"'{limit_field}' must be at least 1, got {max_tokens}", param=limit_field)
    if max_tokens < 1 or max_tokens > room:
        message = (
            f"This model's maximum context length is {backend.max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max(max_tokens, 1)} tokens ({prompt_tokens} in the prompt, {max(max_tokens, 1)} "
            "in the completion). Please reduce the length of the prompt or completion."
        )
        raise OpenAIError(400, message, param=limit_field, code="context_length_exceeded")
    seed = _get(document, "seed", int)
    ignore_eos = _get(document, "ignore_eos", bool, False)
    request = _Request(
        model=name,
        chat=chat,
        stream=stream,
        include_usage=_get(options, "include_usage", bool, False),
        continuous_usage=_get(options, "include_usage", bool, False)
        and _get(options, "continuous_usage_stats", bool, False),  # as vLLM: only with include_usage
        prompt_tokens=prompt_tokens,
    )
    sequence = backend.start(loaded.stats, prompt, max_tokens, ignore_eos=ignore_eos, seed=seed)
    if stream:
        return 200, [], EventStream(_events(backend, sequence, request))
    try:
        text = "".join([token.text async for token in sequence])
    finally:
        backend.cancel(sequence)  # a no-op once it finished; else the client went away
    return 200, [], _dumps(_whole_answer(request, text, sequence.finish_reason, sequence.generated))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def _head(request: _Request, prefix: str, kind: str) -> dict:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": request.model}


def _whole_answer(request: _Request, text: str, finish_reason: str | None, generated: int) -> dict:
    if request.chat:
        document = _head(request, "chatcmpl", "chat.completion")
        message = {"role": "assistant", "content": text}
        document["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}]
    else:
        document = _head(request, "cmpl", "text_completion")
        document["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]
    document["usage"] = _usage(request.prompt_tokens, generated)
    return document


async def _events(backend: GenerativeModel, sequence, request: _Request) -> AsyncIterator[bytes]:
    """The SSE events of one streamed answer; leaving early (the client went away) cancels the sequence."""
    head = _head(request, *(("chatcmpl", "chat.completion.chunk") if request.chat else ("cmpl", "text_completion")))

    def event(choice: dict | None, received: int) -> bytes:
        chunk = {**head, "choices": [choice] if choice is not None else []}
        if request.continuous_usage or (choice is None):
            chunk["usage"] = _usage(request.prompt_tokens, received)
        elif request.include_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk) + b"\n\n"

    received = 0
    try:
        async for text, finish in sequence:
            received += 1
            if request.chat:
                if received == 1:
                    yield event({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}, 0)  # fmt: skip
                choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            yield event(choice, received)
        if request.include_usage:
            yield event(None, received)
        yield b"data: [DONE]\n\n"
    finally:
        backend.cancel(sequence)
